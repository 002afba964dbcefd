"""Outlines over maps: a detection's box and the borders of semantic regions, in plots and in the report."""

from __future__ import annotations

import matplotlib
import numpy as np
from test_explanation import make_explanation

matplotlib.use("Agg")

from dataclasses import replace

from xai_bridge.viz.outlines import outline_mask, region_edges
from xai_bridge.viz.plot import explanation_plot
from xai_bridge.viz.report_data import method_maps, named, sections


def _with_box_and_regions(exp):
    n, t, h, w = exp.attributions.shape
    boxes = np.tile(np.array([2, 3, 10, 12], np.float32), (n, t, 1))
    segments = np.zeros((n, t, h, w), np.int32)
    segments[..., :, w // 2 :] = 1
    return replace(
        exp, extras={**dict(exp.extras), "boxes": boxes, "segments": segments}, params={**exp.params, "partition": {}}
    )


def test_region_edges_and_outline_mask() -> None:
    seg = np.zeros((6, 8), np.int32)
    seg[:, 4:] = 1
    edges = region_edges(seg)
    assert edges[:, 4].all() and edges.sum() == 6
    exp = _with_box_and_regions(make_explanation(h=16, w=16))
    mask = outline_mask(exp, 0, 0, exp.attributions.shape[-2:])
    assert mask is not None and mask[3, 2] and mask[3, 9] and mask[11, 5] and not mask[6, 6]
    half = outline_mask(exp, 0, 0, (exp.attributions.shape[-2] // 2, exp.attributions.shape[-1] // 2))
    assert half is not None and half.shape == (exp.attributions.shape[-2] // 2, exp.attributions.shape[-1] // 2)
    assert outline_mask(make_explanation(h=16, w=16), 0, 0, exp.attributions.shape[-2:]) is None  # nothing to outline


def test_plot_draws_the_box_and_the_report_carries_the_outline() -> None:
    exp = _with_box_and_regions(make_explanation(h=16, w=16))
    fig = explanation_plot(exp)
    panel = fig.axes[1]
    assert len(panel.patches) == 1 and len(panel.images) == 2  # the map, then the region borders
    sec = sections(named({"m": exp}))[0]
    maps = method_maps(sec, {"m": True}, max_side=512)
    assert all(target is None or "outline" in target for target in maps[0]["targets"])
    plain = method_maps(sections(named({"m": make_explanation()}))[0], {"m": True}, max_side=512)
    assert all(target is None or "outline" not in target for target in plain[0]["targets"])


def test_the_notebook_view_draws_the_outline_in_white() -> None:
    from xai_bridge.viz.notebook import _tiles

    exp = _with_box_and_regions(make_explanation(h=16, w=16))
    _, outlined = _tiles(exp, 0, side=16)
    _, plain = _tiles(make_explanation(h=16, w=16), 0, side=16)
    tile, bare = np.asarray(outlined[0]), np.asarray(plain[0])
    edges = outline_mask(exp, 0, 0, tile.shape[:2])
    assert edges is not None and tile.shape[:2] == (16, 16)
    assert (tile[edges] == 255).all() and (tile[~edges] == bare[~edges]).all()
    assert (bare[edges] != 255).any()  # the white is drawn, not the colour map's
