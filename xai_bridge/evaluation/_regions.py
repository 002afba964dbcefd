"""Regions of the pointing game: boxes or masks, per image and target."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from xai_bridge.errors import ParameterError
from xai_bridge.explanation import Explanation

if TYPE_CHECKING:  # pragma: no cover
    pass


class Box(NamedTuple):
    """An object's box in pixels: ``(x0, y0)`` its top-left corner, ``(x1, y1)`` one past its bottom-right.

    x counts columns and y rows, so ``x1 - x0`` is the width (end exclusive),
    the order of PIL's ``crop`` and of COCO-style corner boxes. Name the
    fields, ``Box(x0=10, y0=4, x1=50, y1=30)``, and the order cannot be
    swapped; every plain 4-tuple xai-bridge accepts is read in this order.

    Example:
        >>> xb.evaluate(model, exp, "pointing_game", boxes=[xb.Box(x0=10, y0=4, x1=50, y1=30)])  # doctest: +SKIP
    """

    x0: float
    y0: float
    x1: float
    y1: float


def boxes_to_masks(boxes: Any, shape: tuple[int, int], n_images: int) -> np.ndarray:
    """Bool ``(N, H, W)`` masks from boxes :class:`Box` ``(x0, y0, x1, y1)`` (pixels, end exclusive).

    ``boxes`` holds one entry per image: a box, or a list of boxes (their
    union). A box with no pixel inside the image is refused (a box given as
    ``(y0, x0, y1, x1)`` often lands there).
    """
    items = list(boxes)
    if n_images == 1 and len(items) == 4 and all(np.ndim(v) == 0 for v in items):
        items = [items]
    if len(items) != n_images:
        raise ParameterError(f"boxes: got {len(items)} entries for {n_images} images; pass one box (or list) per image")
    h, w = shape
    out = np.zeros((n_images, h, w), bool)
    for i, entry in enumerate(items):
        arr = np.asarray(entry, dtype=float)
        arr = arr[None] if arr.ndim == 1 else arr
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise ParameterError(f"boxes: expected (x0, y0, x1, y1) per box, got {entry!r} for image {i}")
        for x0, y0, x1, y1 in arr.tolist():
            if not (x1 > x0 and y1 > y0):
                raise ParameterError(
                    f"boxes: box {(x0, y0, x1, y1)} of image {i} is empty; expected x1 > x0 and y1 > y0"
                )
            rows = slice(max(int(y0), 0), min(int(np.ceil(y1)), h))
            cols = slice(max(int(x0), 0), min(int(np.ceil(x1)), w))
            if rows.start >= rows.stop or cols.start >= cols.stop:
                raise ParameterError(
                    f"boxes: box {Box(x0, y0, x1, y1)} of image {i} has no pixel inside the {w}x{h} (width x height) "
                    "image; boxes are Box(x0, y0, x1, y1) with x the column and y the row"
                )
            out[i, rows, cols] = True
    return out


def _regions(exp: Explanation, boxes: Any, masks: Any) -> np.ndarray:
    """Bool ``(N, T, H, W)`` regions for the pointing game."""
    n, t, h, w = exp.attributions.shape
    if (boxes is None) == (masks is None):
        raise ParameterError("boxes/masks: the pointing game needs exactly one of boxes=... or masks=...")
    region = boxes_to_masks(boxes, (h, w), n) if boxes is not None else np.asarray(masks).astype(bool)
    if region.ndim == 3:
        region = np.repeat(region[:, None], t, axis=1)
    if region.shape != (n, t, h, w):
        raise ParameterError(f"masks: expected bool (N, H, W) or (N, T, H, W) = {(n, t, h, w)}, got {region.shape}")
    return region
