"""Checks and conversions of user values shared by every method, written once.

Each check raises :class:`~xai_bridge.errors.ParameterError` naming the
parameter, what it expects and what it got.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ParameterError

__all__ = ["int_at_least", "number_in", "to_uint8"]


def int_at_least(name: str, value: Any, low: int) -> int:
    """``value`` as an int, refusing bools, floats, strings and anything below ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ParameterError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def number_in(name: str, value: Any, low: float, high: float, low_open: bool = False) -> float:
    """``value`` as a float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ParameterError(f"{name}: expected a number, got {value!r}")
    number = float(value)
    if not (low < number if low_open else low <= number) or not number <= high or np.isnan(number):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ParameterError(f"{name}: expected a number in {interval}, got {value!r}")
    return number


def to_uint8(values: Any) -> np.ndarray:
    """Round pixel values to the nearest integer and clip them to uint8's 0..255."""
    return np.clip(np.rint(np.asarray(values, dtype=np.float64)), 0, 255).astype(np.uint8)
