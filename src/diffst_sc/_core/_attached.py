"""What ``fit`` attaches to the user's data objects: their model, an AnnData's SpatialData.

Kept beside the objects, by ``(id(obj), what)``. An entry lives exactly as long as its object:
a finaliser removes it when the object is collected, so a model does not outlive its data, and
an id that Python reuses finds nothing. (SpatialData and AnnData are not hashable, so a
``WeakKeyDictionary`` cannot hold them.)
"""

from __future__ import annotations

import weakref

_ATTACHED: dict[tuple[int, str], object] = {}
#: A weak reference to each object with entries in ``_ATTACHED``, by its id.
_OBJECTS: dict[int, weakref.ref] = {}


def _forget(i: int) -> None:
    _OBJECTS.pop(i, None)
    for key in [k for k in _ATTACHED if k[0] == i]:
        del _ATTACHED[key]


def attach(obj, what: str, value) -> None:
    """Attach ``value`` to ``obj`` under ``what``, replacing what was there."""
    i = id(obj)
    if i not in _OBJECTS:
        _OBJECTS[i] = weakref.ref(obj)
        weakref.finalize(obj, _forget, i)
    _ATTACHED[(i, what)] = value


def attached(obj, what: str):
    """What is attached to ``obj`` under ``what``, or ``None``."""
    ref = _OBJECTS.get(id(obj))
    if ref is None or ref() is not obj:
        return None
    return _ATTACHED.get((id(obj), what))


def holders(what: str, value) -> list:
    """The live objects that have ``value`` attached under ``what``."""
    out = []
    for (i, w), v in list(_ATTACHED.items()):
        obj = _OBJECTS[i]() if i in _OBJECTS else None
        if w == what and v is value and obj is not None:
            out.append(obj)
    return out
