"""A process's resident memory and its peak since a mark, for the speed tables (Linux exact)."""

import re
import resource
import sys
from pathlib import Path


def current_rss_mb() -> float:
    """Resident memory of this process now, in MiB (``nan`` off Linux)."""
    try:
        m = re.search(r"VmRSS:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
        return int(m.group(1)) / 1024 if m else float("nan")
    except OSError:
        return float("nan")


def reset_peak() -> bool:
    """Reset this process's peak-memory mark (Linux); ``False`` where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb(since_reset: bool) -> float:
    """Peak resident memory in MiB: since :func:`reset_peak` if it worked, else of the process."""
    if since_reset:
        m = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
        if m:
            return int(m.group(1)) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def load_average() -> float:
    """The machine's load average over the last minute (``nan`` where unknown): other jobs."""
    try:
        import os

        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return float("nan")
