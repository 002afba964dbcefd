"""Checks and conversions of user values shared by every method, written once.

Each check raises :class:`~xai_bridge.errors.ParameterError` naming the
parameter, what it expects and what it got, before a library sees the value:
a library's own failure (``could not convert string to float``, an
``AssertionError`` deep in its code) does not say which argument was wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np

from .errors import ParameterError

__all__ = ["choice", "flag", "int_at_least", "int_or_default", "number", "number_in", "to_uint8"]

T = TypeVar("T")


def int_at_least(name: str, value: Any, low: int) -> int:
    """``value`` as an int, refusing bools, floats, strings and anything below ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ParameterError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def int_or_default(name: str, value: Any, default: int, low: int = 1) -> int:
    """``value`` as an int >= ``low``, or ``default`` when it is None.

    Only None means "use the default": ``0`` is refused instead of being
    silently replaced, so a user who asked for 0 learns that it is invalid.
    """
    return int_at_least(name, default if value is None else value, low)


def number(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the interval, refusing bools, strings, NaN and infinities.

    The bounds are closed unless ``low_open`` / ``high_open`` (e.g. a kernel
    width > 0 is ``number("kernel_width", v, 0, low_open=True)``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ParameterError(f"{name}: expected a number, got {value!r}")
    out = float(value)
    above = low < out if low_open else low <= out
    below = out < high if high_open else out <= high
    if not math.isfinite(out) or not above or not below:
        raise ParameterError(f"{name}: expected {_interval(low, high, low_open, high_open)}, got {value!r}")
    return out


def number_in(name: str, value: Any, low: float, high: float, low_open: bool = False) -> float:
    """``value`` as a float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    return number(name, value, low, high, low_open=low_open)


def choice(name: str, value: Any, options: Iterable[T]) -> T:
    """``value`` if it is one of ``options`` (strings compare case-insensitively), else a ParameterError.

    Returns the option as spelled in ``options``, so ``"RBF"`` becomes ``"rbf"``.
    """
    opts = list(options)
    for option in opts:
        same_text = isinstance(value, str) and isinstance(option, str) and value.lower() == option.lower()
        if same_text or (not isinstance(value, str) and _same(value, option)):
            return option
    raise ParameterError(f"{name}: expected one of {opts!r}, got {value!r}", valid=tuple(map(str, opts)))


def flag(name: str, value: Any) -> bool:
    """``value`` as a bool, refusing ``"false"``, ``0`` and other look-alikes (``bool("false")`` is True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if math.isinf(low) and math.isinf(high):
        return "a finite number"
    if math.isinf(high):
        return f"a number {'>' if low_open else '>='} {low:g}"
    if math.isinf(low):
        return f"a number {'<' if high_open else '<='} {high:g}"
    return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _same(value: Any, option: Any) -> bool:
    integers = (int, np.integer)
    if isinstance(value, integers) and isinstance(option, integers):  # np.int64(1) is the choice 1, True is not
        return not isinstance(value, (bool, np.bool_)) and not isinstance(option, bool) and int(value) == int(option)
    try:
        return bool(value == option) and type(value) is type(option)
    except Exception:  # arrays and other odd values are never a choice
        return False


def to_uint8(values: Any) -> np.ndarray:
    """Round pixel values to the nearest integer and clip them to uint8's 0..255.

    A batch is converted one image at a time through one scratch buffer: the
    float64 temporaries of a whole batch (60 MB for 50 images at 224x224)
    would stream through memory three times; an image's stay in the cache
    (~4x faster on shap's batches, the same bytes).
    """
    arr = np.asarray(values)
    if arr.dtype == np.uint8:
        return arr.copy()
    if arr.ndim < 4 or len(arr) < 2:
        return np.clip(np.rint(np.asarray(arr, dtype=np.float64)), 0, 255).astype(np.uint8)
    out = np.empty(arr.shape, np.uint8)
    buf = np.empty(arr.shape[1:], np.float64)
    for i in range(len(arr)):
        np.rint(arr[i], out=buf, casting="unsafe")
        np.clip(buf, 0, 255, out=buf)
        out[i] = buf
    return out
