"""A segmentation explanation's regions drawn over its maps: plot() and the report outline each target's region."""

from __future__ import annotations

import numpy as np
from seg_models import ColourSegmenter, scene

import xai_bridge as xb
from xai_bridge.viz.outlines import outline_mask


def test_the_region_contour_is_outlined_in_plots_and_the_report() -> None:
    exp = xb.explain(ColourSegmenter(), scene(), "builtin.Occlusion", targets=["red", "blue"], window=8, stride=8)
    edges = outline_mask(exp, 0, 0, (32, 40))
    assert edges is not None
    inside = np.zeros((32, 40), bool)
    inside[4:14, 4:14] = True
    expected = np.zeros((32, 40), bool)  # the pixels on either side of the red square's border
    expected[:, 1:] |= inside[:, 1:] != inside[:, :-1]
    expected[:, :-1] |= inside[:, 1:] != inside[:, :-1]
    expected[1:, :] |= inside[1:, :] != inside[:-1, :]
    expected[:-1, :] |= inside[1:, :] != inside[:-1, :]
    assert edges[expected].mean() > 0.45 and not edges[~expected].any()
    half = outline_mask(exp, 0, 1, (16, 20))  # the report's shrunk maps: resampled, still the blue square's border
    assert half is not None and half[8:14, 10:18].any() and not half[:6].any()

    import matplotlib

    matplotlib.use("Agg")
    fig = exp.plot()
    layers = [np.asarray(im.get_array()) for ax in fig.axes for im in ax.get_images()]
    contours = [a[..., 3] > 0 for a in layers if a.ndim == 3 and a.shape[-1] == 4]
    assert any(np.array_equal(c, edges) for c in contours)  # the red region's contour, drawn over its map
