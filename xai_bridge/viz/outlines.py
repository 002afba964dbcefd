"""What a map is about, drawn over it: a detection's box, the regions a method explained.

Detections (``extras["boxes"]``, ``(N, T, 4)`` as ``(x0, y0, x1, y1)``) get
their box outlined; semantic regions (``extras["segments"]`` of a shap
Partition run with ``partition=``) get their borders drawn thin, so a reader
sees which region each value belongs to; a segmentation target's region
(``extras["regions"]``, bool ``(N, T, H, W)``) gets its contour; a
detection's keypoints (``extras["keypoints"]``, ``(N, T, J, 3)`` as ``(x, y,
visibility)``) get a dot each where visible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xai_bridge.explanation import Explanation

__all__ = ["draw_outlines", "outline_mask", "region_edges"]


def region_edges(segments: np.ndarray) -> np.ndarray:
    """Bool ``(H, W)``: pixels on the border between two regions of an integer label image."""
    seg = np.asarray(segments)
    edges = np.zeros(seg.shape, bool)
    edges[:, 1:] |= seg[:, 1:] != seg[:, :-1]
    edges[1:, :] |= seg[1:, :] != seg[:-1, :]
    return edges


def draw_outlines(ax: Any, exp: Explanation, n: int, t: int) -> None:
    """Outline target ``t`` of image ``n`` on ``ax``: its detection box, or the regions it was explained over."""
    extras = exp.extras
    if exp.params.get("partition") is not None and "segments" in extras:
        edges = region_edges(extras["segments"][n, t])
        layer = np.zeros((*edges.shape, 4), np.float32)
        layer[edges] = (1.0, 1.0, 1.0, 0.55)
        ax.imshow(layer, interpolation="nearest")
    if "regions" in extras:  # a segmentation target's region: its contour
        edges = region_edges(np.asarray(extras["regions"][n, t], np.int8))
        layer = np.zeros((*edges.shape, 4), np.float32)
        layer[edges] = (1.0, 1.0, 1.0, 0.9)
        ax.imshow(layer, interpolation="nearest")
    if "boxes" in extras:
        x0, y0, x1, y1 = (float(v) for v in extras["boxes"][n, t])
        if np.isfinite([x0, y0, x1, y1]).all():
            from matplotlib import patheffects
            from matplotlib.patches import Rectangle

            halo: list[Any] = [patheffects.withStroke(linewidth=3, foreground="black")]
            box = Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.5)
            box.set_path_effects(halo)
            ax.add_patch(box)
    if "keypoints" in extras:  # pixel i spans [i, i + 1) as for boxes; the axes put its centre at i
        xs, ys = _visible(extras["keypoints"][n, t])
        ax.scatter(xs - 0.5, ys - 0.5, s=14, c="white", edgecolors="black", linewidths=0.8, zorder=3)


def outline_mask(exp: Explanation, n: int, t: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Bool ``shape`` of what :func:`draw_outlines` draws (region borders, the box's edges), or None if nothing.

    For the report, whose maps may be shrunk to ``shape``: labels are
    resampled nearest-neighbour and the box scaled before its edges are drawn.
    """
    extras = exp.extras
    h, w = shape
    src_h, src_w = exp.attributions.shape[-2:]
    out = np.zeros(shape, bool)
    nearest = np.ix_((np.arange(h) * src_h // h).clip(0, src_h - 1), (np.arange(w) * src_w // w).clip(0, src_w - 1))
    if exp.params.get("partition") is not None and "segments" in extras:
        out |= region_edges(np.asarray(extras["segments"][n, t])[nearest])
    if "regions" in extras:
        out |= region_edges(np.asarray(extras["regions"][n, t], np.int8)[nearest])
    if "boxes" in extras:
        x0, y0, x1, y1 = (float(v) for v in extras["boxes"][n, t])
        if np.isfinite([x0, y0, x1, y1]).all():
            sy, sx = h / src_h, w / src_w
            c0, c1 = int(np.clip(round(x0 * sx), 0, w - 1)), int(np.clip(round(x1 * sx) - 1, 0, w - 1))
            r0, r1 = int(np.clip(round(y0 * sy), 0, h - 1)), int(np.clip(round(y1 * sy) - 1, 0, h - 1))
            out[r0 : r1 + 1, [c0, c1]] = True
            out[[r0, r1], c0 : c1 + 1] = True
    if "keypoints" in extras:  # a plus of 5 pixels per visible keypoint
        xs, ys = _visible(extras["keypoints"][n, t])
        cols = np.clip(np.floor(xs * (w / src_w)).astype(int), 0, w - 1)
        rows = np.clip(np.floor(ys * (h / src_h)).astype(int), 0, h - 1)
        for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
            out[np.clip(rows + dr, 0, h - 1), np.clip(cols + dc, 0, w - 1)] = True
    return out if out.any() else None


def _visible(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The keypoints of one detection (``(J, 3)``) that are visible (above 0) and finite: their xs and their ys."""
    points = np.asarray(keypoints, np.float64).reshape(-1, 3)
    keep = (points[:, 2] > 0) & np.isfinite(points[:, :2]).all(axis=1)
    return points[keep, 0], points[keep, 1]
