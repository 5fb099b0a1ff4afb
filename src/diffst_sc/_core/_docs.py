"""Parameter descriptions shared by the public functions, written once.

A docstring line holding only ``{name}`` (indented as a parameter) becomes that parameter's
entry, as scanpy's and squidpy's shared docstrings do. Descriptions are numpy-style: the name,
then the text indented by four more spaces; the types are in the signatures.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

#: Shared parameter texts, by parameter name.
PARAMETERS = {
    "table_key": "Table of the SpatialData to use; the only one, or ``\"table\"`` when there are "
                 "several, by default (see :func:`diffst_sc.io.describe_section`).",
    "image_key": "H&E image element to use; by default the finest usable image in the "
                 "coordinate system (RGB(A) and not blank: a blank one is skipped, with a "
                 "warning).",
    "coordinate_system": "Coordinate system relating the spots and the H&E; by default the one "
                         "they share (the full-resolution one of a Visium reader).",
    "layer": "Layer of the table holding raw counts; ``\"counts\"`` if present, else ``X``.",
    "microns_per_pixel": "Size of one full-resolution H&E pixel in micrometres; read from the "
                         "data when recorded (Space Ranger's scale factors, "
                         "``ds.io.read_legacy_st``), else guessed from the spots with a warning.",
    "img_key": "With AnnData input: the image in ``uns[\"spatial\"]`` to use as the H&E "
               "(by default the finest usable one: the largest scale factor, RGB(A) and not "
               "blank).",
    "progress": "Show a progress bar.",
}
_PLACEHOLDER = re.compile(r"( *)\{(\w+)\}")
_WIDTH = 99


def shared_parameters(func: F) -> F:
    """Fill the ``{name}`` lines of ``func``'s docstring with :data:`PARAMETERS`' entries.

    Raises
    ------
    KeyError
        For a placeholder naming no shared parameter.
    """
    if not func.__doc__:  # python -OO drops docstrings
        return func
    lines = []
    for line in func.__doc__.split("\n"):
        m = _PLACEHOLDER.fullmatch(line)
        if m is None:
            lines.append(line)
            continue
        indent, name = m.groups()
        lines.append(indent + name)
        body = indent + "    "
        lines.extend(textwrap.wrap(PARAMETERS[name], _WIDTH - 4, initial_indent=body,
                                   subsequent_indent=body))
    func.__doc__ = "\n".join(lines)
    return func
