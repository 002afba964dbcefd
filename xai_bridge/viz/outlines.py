"""What a map is about, drawn over it: a detection's box, the regions a method explained.

Detections (``extras["boxes"]``, ``(N, T, 4)`` as ``(x0, y0, x1, y1)``) get
their box outlined; semantic regions (``extras["segments"]`` of a shap
Partition run with ``partition=``) get their borders drawn thin, so a reader
sees which region each value belongs to.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xai_bridge.explanation import Explanation

__all__ = ["draw_outlines", "region_edges"]


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
    if "boxes" in extras:
        x0, y0, x1, y1 = (float(v) for v in extras["boxes"][n, t])
        if np.isfinite([x0, y0, x1, y1]).all():
            from matplotlib import patheffects
            from matplotlib.patches import Rectangle

            halo = [patheffects.withStroke(linewidth=3, foreground="black")]
            box = Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.5)
            box.set_path_effects(halo)
            ax.add_patch(box)
