"""One map blended over its image, in one of four styles: the pixels every figure and panel shows.

:func:`overlay` is re-exported by :mod:`xai_bridge.viz.plot`; the colours
are the one rule of :mod:`xai_bridge.viz.colors`.
"""

from __future__ import annotations

import enum

import numpy as np

from .colors import DEFAULT_OPACITY, colorize, mark_non_finite

__all__ = ["Style", "overlay"]


class Style(str, enum.Enum):
    """How a map is drawn over its image."""

    HEAT = "heat"  # the colour rule: diverging for signed maps, sequential otherwise, opacity growing with |value|
    SIGNED = "signed"  # the diverging red (for) / blue (against) scale, whatever the method
    MASKED = "masked"  # the image dimmed where the map is low
    OUTLINE = "outline"  # the outline of the top region (seed 002's GradVisualizer)


def overlay(
    image: np.ndarray,
    norm_map: np.ndarray,
    style: Style | str = Style.HEAT,
    cmap: str | None = None,
    alpha: float = DEFAULT_OPACITY,
    top_percent: float = 10.0,
    signed: bool | None = None,
) -> np.ndarray:
    """Blend an already normalised map (in [0, 1], or [-1, 1] when signed) over an image.

    Args:
        image: uint8 ``(H, W, 3)``.
        norm_map: ``(H, W)`` normalised map.
        style: a :class:`Style`.
        cmap: a matplotlib colour map for unsigned HEAT maps instead of the default sequential scale.
        alpha: opacity at ``|value| = 1`` (HEAT, SIGNED); it falls to 0 at 0, so zero shows the image.
        top_percent: share of pixels outlined (OUTLINE).
        signed: HEAT only: diverging (True) or sequential (False); None: signed if any value is negative.

    Returns:
        float ``(H, W, 3)`` RGB in [0, 1].
    """
    m = np.asarray(norm_map, np.float32)
    bad = ~np.isfinite(m)  # NaN / inf: drawn hatched whatever the style
    return mark_non_finite(_overlay(image, np.where(bad, 0, m), Style(style), cmap, alpha, top_percent, signed), bad)


def _overlay(
    image: np.ndarray,
    m: np.ndarray,
    style: Style,
    cmap: str | None,
    alpha: float,
    top_percent: float,
    signed: bool | None,
) -> np.ndarray:
    """:func:`overlay` of a finite map."""
    img = image.astype(np.float32) / 255.0
    if style in (Style.HEAT, Style.SIGNED):
        is_signed = style is Style.SIGNED or (bool((m < 0).any()) if signed is None else signed)
        if cmap is not None and not is_signed:
            from matplotlib import colormaps

            colour = colormaps[cmap](np.clip(m, 0, 1))[..., :3]
            a = float(alpha) * np.clip(m, 0, 1)[..., None]
            return ((1 - a) * img + a * colour).astype(np.float64)
        return colorize(image, m, is_signed, alpha).astype(np.float64) / 255.0
    if style is Style.MASKED:
        return img * np.clip(m, 0, 1)[..., None]
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(m, sigma=max(1.0, min(m.shape) / 56))  # regions, not speckle (GradVisualizer)
    region = smooth >= np.percentile(smooth, 100 - top_percent)
    edge = region & ~ndimage.binary_erosion(region, iterations=max(1, min(m.shape) // 112))
    out = img * 0.8
    out[edge] = (0.0, 1.0, 0.0)
    return out
