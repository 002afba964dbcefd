"""Images and maps brought to the size a view shows, with work and memory bounded by that size.

A 12-megapixel photo's view used to colourise every pixel at full
resolution (float64 copies of the image and each map) and shrink the result.
Here images and maps are first block-averaged by an integer factor in
strips of a few megabytes, so a view's cost follows what it displays, not
what the camera took; only then are they resampled to the exact size and
coloured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from PIL import Image

from xai_bridge.explanation import Explanation

__all__ = ["at_display_size", "display_size", "fit_image", "fit_map", "shrink"]

#: Input values averaged per strip by :func:`shrink` (about 8 MB of float32).
_STRIP_VALUES = 1 << 21


def display_size(height: int, width: int, side: int) -> tuple[int, int]:
    """``(width, height)`` with the longer side ``side`` and the aspect ratio kept (PIL's order)."""
    scale = side / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink(array: np.ndarray, side: int) -> np.ndarray:
    """Block-average ``array`` (``(H, W)`` or ``(H, W, C)``) by the largest integer factor that keeps its longer side >= ``side``.

    Arrays already within twice ``side`` are returned as they are. Otherwise
    the result is float32 (a NaN or infinite value makes its block NaN or
    infinite, so a view still marks it); the last rows and columns that do not
    fill a block (fewer than the factor) are left out.
    """
    h, w = array.shape[:2]
    factor = max(h, w) // max(1, side)
    if factor < 2:
        return array
    rows, cols = h // factor, w // factor
    rest = array.shape[2:]
    out = np.empty((rows, cols, *rest), np.float32)
    channels = int(np.prod(rest)) if rest else 1
    step = max(1, _STRIP_VALUES // (cols * factor * factor * channels))  # output rows per strip
    for r in range(0, rows, step):
        n = min(step, rows - r)
        strip = array[r * factor : (r + n) * factor, : cols * factor]
        # rows first: whole contiguous rows add elementwise (10x faster than a mean over both block axes)
        rows_summed = strip.reshape(n, factor, cols * factor * channels).sum(axis=1, dtype=np.float32)
        out[r : r + n] = rows_summed.reshape(n, cols, factor, *rest).sum(axis=2) / (factor * factor)
    return out


def fit_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``(H, W, 3)`` at ``size`` (width, height): block-averaged first, then Lanczos (nearest when enlarging)."""
    small = shrink(image, max(size))
    if small.dtype != np.uint8:
        small = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(small))
    if img.size == size:
        return np.asarray(img)
    enlarge = size[0] > img.width
    return np.asarray(img.resize(size, Image.Resampling.NEAREST if enlarge else Image.Resampling.LANCZOS))


def fit_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 ``(H, W)`` map at ``size`` (width, height): block-averaged, then a box filter (nearest when enlarging).

    A NaN or infinite value spreads to the pixels it covers, so the views mark it rather than hide it.
    """
    small = np.ascontiguousarray(shrink(np.asarray(values, np.float32), max(size)), np.float32)
    if small.shape[::-1] == size:
        return small
    enlarge = size[0] > small.shape[1]
    img = Image.fromarray(small, mode="F")
    return np.asarray(img.resize(size, Image.Resampling.NEAREST if enlarge else Image.Resampling.BOX), np.float32)


def at_display_size(
    explanations: Mapping[str, Explanation], max_side: int
) -> tuple[dict[str, Explanation], tuple[float, float, float, float] | None]:
    """Explanations of one set of images with images and maps at most ``max_side`` pixels a side, and the extent.

    The extent (``(-0.5, W - 0.5, H - 0.5, -0.5)``, matplotlib's ``imshow``
    order) keeps drawing in the original pixel coordinates, so boxes and
    region outlines from ``extras`` still fall in place; None when nothing
    was shrunk. ``raw`` (per-channel maps) is dropped from the shrunk copies.
    """
    first = next(iter(explanations.values()))
    h, w = first.images.shape[1:3]
    if max(h, w) <= max_side:
        return dict(explanations), None
    size = display_size(h, w, max_side)
    images = np.stack([fit_image(image, size) for image in first.images])
    shrunk = {}
    for name, exp in explanations.items():
        maps = np.stack([np.stack([fit_map(m, size) for m in row]) for row in exp.attributions])
        shrunk[name] = replace(exp, attributions=maps, images=images, raw=None)
    return shrunk, (-0.5, w - 0.5, h - 0.5, -0.5)
