"""Explicit, named normalisations for display. Never applied silently.

Every library scales differently (shap clips at the 99.9th percentile, captum
at ``outlier_perc=2``, grad-cam min-max per image); pick one here and apply it
to every map you compare.
"""

from __future__ import annotations

import enum

import numpy as np

from .errors import ParameterError

__all__ = ["Norm", "normalize"]


class Norm(str, enum.Enum):
    """How to map attributions for display.

    ``ABS``: ``|a|`` scaled to [0, 1]. ``POSITIVE``: negatives set to 0, scaled
    to [0, 1]. ``SIGNED``: divided by the largest ``|a|``, in [-1, 1]. ``MINMAX``:
    ``(a - min) / (max - min)`` in [0, 1] (grad-cam's ``scale_cam_image``).
    """

    ABS = "abs"
    POSITIVE = "positive"
    SIGNED = "signed"
    MINMAX = "minmax"


def normalize(
    maps: np.ndarray,
    mode: Norm | str = Norm.ABS,
    percentile: float | None = None,
    axes: tuple[int, ...] | None = (-2, -1),
) -> np.ndarray:
    """Return normalised copies of ``maps``.

    Args:
        maps: array whose last two axes are ``(H, W)``.
        mode: a :class:`Norm`.
        percentile: clip at this percentile of the (absolute) values before
            scaling, e.g. 99.9 as shap does; None means the maximum.
        axes: axes the scale is computed over: ``(-2, -1)`` per map, ``None``
            one scale for the whole array (one shared scale per figure).

    Returns:
        float32 array of the same shape.
    """
    mode = Norm(mode)
    a = np.asarray(maps, dtype=np.float64)
    if percentile is not None and not 0 < percentile <= 100:
        raise ParameterError(f"percentile: expected a value in (0, 100], got {percentile}")

    def top(values: np.ndarray) -> np.ndarray:
        if percentile is None:
            return np.max(values, axis=axes, keepdims=True)
        return np.percentile(values, percentile, axis=axes, keepdims=True)

    if mode is Norm.MINMAX:
        lo = np.min(a, axis=axes, keepdims=True)
        hi = top(a)
        out = (np.minimum(a, hi) - lo) / np.where(hi - lo > 0, hi - lo, 1.0)
    elif mode is Norm.SIGNED:
        scale = top(np.abs(a))
        out = np.clip(a / np.where(scale > 0, scale, 1.0), -1.0, 1.0)
    else:
        a = np.abs(a) if mode is Norm.ABS else np.maximum(a, 0.0)
        scale = top(a)
        out = np.clip(a / np.where(scale > 0, scale, 1.0), 0.0, 1.0)
    return out.astype(np.float32)
