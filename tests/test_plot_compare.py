"""Figures (content, one normalisation rule) and agreement metrics on maps with known answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_explanation import make_explanation

from xai_bridge import Norm
from xai_bridge.viz.compare import agreement_matrix, agreement_table, rank_correlation, top_k_iou
from xai_bridge.viz.plot import caption_plot, comparison_grid, overlay


def test_identical_maps_agree_fully_and_inverted_maps_not_at_all() -> None:
    ramp = np.arange(100, dtype=float).reshape(10, 10)
    assert rank_correlation(ramp, ramp) == pytest.approx(1.0)
    assert top_k_iou(ramp, ramp, 10) == 1.0
    assert rank_correlation(ramp, -ramp, mode=None) == pytest.approx(-1.0)
    assert rank_correlation(ramp, ramp.max() - ramp) == pytest.approx(-1.0)
    assert top_k_iou(ramp, ramp.max() - ramp, 10) == 0.0


def test_known_partial_overlap_and_ties() -> None:
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[0, :4] = [4, 3, 2, 1]  # top 25% = 4 pixels: row 0
    b[0, 2:4] = [5, 5]
    b[1, 0:2] = [5, 5]  # top 4 pixels: half of row 0 + half of row 1
    assert top_k_iou(a, b, 25) == pytest.approx(2 / 6)
    tied = np.array([[1.0, 1.0], [2.0, 2.0]])
    assert rank_correlation(tied, np.array([[0.0, 0.0], [1.0, 1.0]])) == pytest.approx(1.0)
    assert np.isnan(rank_correlation(np.ones((2, 2)), tied))
    with pytest.raises(ValueError, match="percent"):
        top_k_iou(a, b, 0)
    with pytest.raises(ValueError, match="shapes differ"):
        rank_correlation(a, b[:2])


def test_agreement_table_and_matrix() -> None:
    exp = make_explanation()
    flipped = dataclasses.replace(exp, attributions=-exp.attributions[..., ::-1, :], raw=None, method="flip")
    same = dataclasses.replace(exp, method="same")
    table = agreement_table({"a": exp, "same": same, "flip": flipped})
    assert list(table.columns) == ["method_a", "method_b", "image", "target", "rank_correlation", "top_k_iou"]
    assert len(table) == 3 * 2 * 3  # pairs x images x targets
    same_rows = table[(table.method_a == "a") & (table.method_b == "same")]
    assert np.allclose(same_rows.rank_correlation, 1.0) and np.allclose(same_rows.top_k_iou, 1.0)
    matrix = agreement_matrix(table)
    assert list(matrix.index) == ["a", "same", "flip"]
    assert np.allclose(matrix.values, matrix.values.T) and np.allclose(np.diag(matrix.values), 1.0)


def test_grid_layout_titles_and_colour_bar() -> None:
    exp = make_explanation()  # 2 images, 3 targets
    other = dataclasses.replace(exp, method="other")
    fig = comparison_grid({"lib.MethodA": exp, "lib.MethodB": other})
    image_axes = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(image_axes) == 2 * (1 + 2)
    assert len(fig.axes) == 2 * 3 + 1  # + colour bar
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == ["image", "lib\nMethodA", "lib\nMethodB"]
    assert fig.axes[1].get_xlabel() == "class 0" and fig.axes[4].get_xlabel() == "class 3"
    assert "signed" in fig.axes[-1].get_ylabel()  # make_explanation's maps have both signs
    per_target = comparison_grid({"lib.MethodA": exp}, per_target=True)
    assert len(per_target.axes) == 2 * (1 + 3) + 1
    assert fig.xai_bridge_norm == {"norm": "signed", "percentile": 99.0, "scale": "map"}


def test_one_rule_for_every_map_in_a_row() -> None:
    exp = make_explanation(n=1, t=1)
    louder = dataclasses.replace(exp, attributions=exp.attributions * 10, raw=None, method="louder")
    per_map = comparison_grid({"a": exp, "b": louder}, scale="map")
    a, b = (ax.images[0].get_array() for ax in per_map.axes[1:3])
    assert np.array_equal(a, b)  # same rule, each map scaled by itself: identical pictures
    shared = comparison_grid({"a": exp, "b": louder}, scale="figure", style="masked", percentile=None)
    a, b = (np.asarray(ax.images[0].get_array(), float) for ax in shared.axes[1:3])
    assert a.mean() < b.mean() / 5  # one scale for the figure: the quiet map looks quiet
    with pytest.raises(ValueError, match="other images"):
        comparison_grid({"a": exp, "b": dataclasses.replace(exp, images=exp.images[:, ::-1].copy())})


def test_overlay_styles() -> None:
    image = np.full((20, 20, 3), 128, np.uint8)
    m = np.zeros((20, 20))
    m[5:10, 5:10] = 1.0
    assert overlay(image, m, "masked")[0, 0].tolist() == [0.0, 0.0, 0.0]
    signed = overlay(image, -m, "signed", alpha=1.0)
    assert signed[7, 7, 2] > signed[7, 7, 0]  # negative: blue
    outline = overlay(image, m, "outline", top_percent=6.25)
    green = (outline[..., 1] == 1.0) & (outline[..., 0] == 0.0)
    assert green.any() and green[:4].sum() == 0  # outline drawn around the square only


def test_caption_plot_has_one_panel_per_token() -> None:
    exp = make_explanation(n=1, t=4)
    fig = caption_plot(exp)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 5  # image + 4 tokens (+ colour bar axis without image)
    assert [ax.get_title() for ax in panels[1:]] == [f"class {i}" for i in range(4)]
    assert Norm.SIGNED.value in fig.axes[-1].get_ylabel()
