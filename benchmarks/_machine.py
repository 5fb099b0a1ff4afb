"""A one-line description of the machine a benchmark ran on, for the result tables."""

import os
import platform
import sys
from pathlib import Path


def machine() -> str:
    """CPU model and count, OS, and torch's threads or GPU once torch is loaded."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = (f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")
    if "torch" in sys.modules:
        import torch

        n = torch.get_num_threads()
        desc += f", torch {torch.__version__} ({n} thread{'s' if n != 1 else ''})"
        if torch.cuda.is_available():
            desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc
