"""The read-only arrays an :class:`~xai_bridge.explanation.Explanation` owns, and slices that share them.

An Explanation copies every array it is given and makes the copy read-only,
so nothing the caller still holds can change it. A slice of an Explanation
(``exp[0]``, ``exp[:, :2]``) is built from views of those copies: they are
read-only and no caller holds a writeable array over the same memory, so they
are shared instead of copied again (a 4000x4000 explanation's slice costs no
pixels). Only arrays whose memory an Explanation made are shared this way; a
read-only array from anywhere else is still copied, since its owner may make
it writeable again.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from .errors import ParameterError

__all__ = ["as_slice", "frozen_array"]

#: The arrays that :func:`frozen_array` made, by id (an entry leaves with its array).
_OWNED: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()


def _shares_owned_memory(value: Any, dtype: Any) -> bool:
    """Whether ``value`` is a read-only view (or the array itself) of memory an Explanation made, of ``dtype``."""
    if not isinstance(value, np.ndarray) or value.flags.writeable or (dtype is not None and value.dtype != dtype):
        return False
    root = value
    while isinstance(root.base, np.ndarray):
        root = root.base
    return _OWNED.get(id(root)) is root and not root.flags.writeable


def frozen_array(value: Any, dtype: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """``value`` as a read-only array of ``dtype`` (None: its own) that no caller can change.

    A copy, unless ``value`` is already a read-only view of an Explanation's
    own memory (see the module docstring).

    Raises:
        ParameterError: ``ndim`` given and the array has another number of dimensions.
    """
    if _shares_owned_memory(value, dtype):
        arr: np.ndarray = value
    else:
        arr = np.array(value, dtype=dtype, copy=True)
        arr.setflags(write=False)
        _OWNED[id(arr)] = arr
    if ndim is not None and arr.ndim != ndim:
        raise ParameterError(f"Explanation.{name}: expected {ndim} dimensions, got shape {arr.shape}")
    return arr


def as_slice(picked: np.ndarray) -> slice | np.ndarray:
    """Positions picked along one axis as a slice where they are evenly spaced upwards (so indexing gives a view).

    Any other order (repeats, descending, uneven gaps) stays an index array,
    which numpy can only answer with a copy.
    """
    if picked.dtype == bool:
        picked = np.flatnonzero(picked)
    if picked.size == 0:
        return slice(0, 0)
    first = int(picked[0])
    if picked.size == 1:
        return slice(first, first + 1)
    steps = np.diff(picked)
    step = int(steps[0])
    if step > 0 and bool((steps == step).all()):
        return slice(first, int(picked[-1]) + 1, step)
    return picked
