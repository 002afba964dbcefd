"""Agreement between methods (rank correlation, top-k IoU, tables) on maps with known answers.

Everything is built from hand-made Explanations: no models, milliseconds per test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats
from test_explanation import make_explanation
from test_plot import exp_of, ramp

from xai_bridge.viz.compare import (
    agreement_matrix,
    agreement_table,
    pairwise_agreement,
    rank_correlation,
    top_k_iou,
)

H, W = 6, 8


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


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_rank_correlation_equals_scipy_spearman_with_and_without_ties(decimals: int | None) -> None:
    """Average ranks of tied runs (a blocky occlusion map, an upsampled CAM) as scipy computes them."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 64, 64))
    if decimals is not None:
        a, b = np.round(a, decimals), np.round(b + a, decimals)
    expected = stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic
    assert rank_correlation(a, b) == pytest.approx(expected, abs=1e-12)


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


def test_identical_and_inverted_maps() -> None:
    a = ramp()
    assert rank_correlation(a, a.copy()) == pytest.approx(1.0)
    assert top_k_iou(a, a.copy(), 10) == 1.0
    inverted = a.max() + 1 - a
    assert rank_correlation(a, inverted) == pytest.approx(-1.0)
    assert top_k_iou(a, inverted, 10) == 0.0
    # |.| by default: a sign flip is full agreement; raw signed values disagree completely
    assert rank_correlation(a, -a) == pytest.approx(1.0)
    assert rank_correlation(a, -a, mode=None) == pytest.approx(-1.0)
    assert rank_correlation(a, -a, mode="signed") == pytest.approx(-1.0)
    assert top_k_iou(a, -a, 10, mode="positive") < 1.0


def test_known_partial_overlap() -> None:
    a = np.zeros((4, 5))
    b = np.zeros((4, 5))
    a[0, :4] = [9, 8, 7, 6]  # top 20% = 4 pixels
    b[0, 2:4] = [9, 9]
    b[3, :2] = [5, 5]  # shares 2 of 4 pixels with a
    assert top_k_iou(a, b, 20) == pytest.approx(2 / 6)
    assert top_k_iou(a, b, 10) == pytest.approx(0.0)  # top 2 pixels: (0,0),(0,1) vs (0,2),(0,3)
    assert top_k_iou(a, b, 100) == 1.0
    assert top_k_iou(a, b, 1) == 0.0  # at least one pixel is kept


def test_rank_correlation_with_ties_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(6, 7)).astype(float)  # many ties
    b = a + rng.integers(0, 3, size=(6, 7))
    expected = stats.spearmanr(a.ravel(), b.ravel()).statistic
    assert rank_correlation(a, b) == pytest.approx(expected, abs=1e-12)
    tied = np.array([[1.0, 1.0], [2.0, 2.0]])
    assert rank_correlation(tied, np.array([[0.0, 0.0], [1.0, 1.0]])) == pytest.approx(1.0)
    assert np.isnan(rank_correlation(np.ones((2, 2)), tied))  # a constant map has no ranking


def test_metric_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="percent"):
        top_k_iou(ramp(), ramp(), 0)
    with pytest.raises(ValueError, match="percent"):
        top_k_iou(ramp(), ramp(), 101)
    with pytest.raises(ValueError, match="shapes differ"):
        rank_correlation(ramp(), ramp()[:2])
    with pytest.raises(ValueError, match="shapes differ"):
        top_k_iou(ramp(), ramp()[:2])


def test_agreement_table_rows_columns_and_values() -> None:
    maps = np.stack([np.stack([ramp(), ramp(2.0)]), np.stack([ramp(), -ramp()])])  # 2 images x 2 targets
    a = exp_of(maps)
    same = exp_of(maps * 3, "same")
    flip = exp_of(maps[..., ::-1, ::-1].copy(), "flip")  # the ramp reversed: rank -1, IoU 0
    table = agreement_table({"a": a, "same": same, "flip": flip}, percent=10)
    assert list(table.columns) == ["method_a", "method_b", "image", "target", "rank_correlation", "top_k_iou"]
    assert len(table) == 3 * 2 * 2  # pairs x images x targets
    assert list(table.target[:4]) == [0, 1, 2, 3]
    pair = lambda x, y: table[(table.method_a == x) & (table.method_b == y)]  # noqa: E731
    assert np.allclose(pair("a", "same").rank_correlation, 1) and np.allclose(pair("a", "same").top_k_iou, 1)
    assert np.allclose(pair("a", "flip").rank_correlation, -1) and np.allclose(pair("a", "flip").top_k_iou, 0)
    matrix = agreement_matrix(table)
    assert list(matrix.index) == list(matrix.columns) == ["a", "same", "flip"]
    assert np.allclose(matrix.values, matrix.values.T) and np.allclose(np.diag(matrix.values), 1)
    assert matrix.loc["same", "flip"] == pytest.approx(-1) and matrix.loc["a", "same"] == pytest.approx(1)
    iou = agreement_matrix(table, "top_k_iou")
    assert iou.loc["flip", "a"] == 0 and iou.loc["a", "a"] == 1
    assert len(agreement_table([a])) == 0


def test_agreement_compares_only_maps_of_the_same_target() -> None:
    maps = np.stack([ramp(), ramp()])[None]  # 1 image x 2 targets
    a = exp_of(maps, targets=np.array([[3, 1]]))
    b = exp_of(maps, "b", targets=np.array([[3, 2]]))  # position 1 explains another class
    table = agreement_table([a, b])
    assert list(table.target) == [3]
    c = exp_of(maps, "c", targets=np.array([[4, 1]]))  # shares class 1 with a, nothing with b
    matrix = agreement_matrix(agreement_table({"a": a, "b": b, "c": c}))
    assert matrix.loc["a", "b"] == pytest.approx(1) and matrix.loc["a", "c"] == pytest.approx(1)
    assert np.isnan(matrix.loc["b", "c"]) and np.isnan(matrix.loc["c", "b"])  # never compared: NaN, not 0
    with pytest.raises(ValueError, match="different images"):
        agreement_table([a, exp_of(np.stack([maps[0], maps[0]]), "two images")])
    with pytest.raises(ValueError, match="different images"):  # same shape, other pixels
        agreement_table({"a": a, "dark": exp_of(maps, "dark", images=np.zeros((1, H, W, 3), np.uint8))})


def test_pairwise_agreement_equals_the_per_pair_functions() -> None:
    """Each map ranked once gives the same matrix as every pair compared on its own (ties and a constant map)."""
    rng = np.random.default_rng(5)
    maps = [
        rng.normal(size=(16, 16)),
        np.round(rng.normal(size=(16, 16)), 1),
        np.ones((16, 16)),
        np.arange(256.0).reshape(16, 16),
    ]
    rho, iou = pairwise_agreement(maps, percent=20)
    for i, a in enumerate(maps):
        for j, b in enumerate(maps):
            if i == j:
                assert rho[i, j] == iou[i, j] == 1.0
                continue
            expected = rank_correlation(a, b)
            assert (np.isnan(rho[i, j]) and np.isnan(expected)) or rho[i, j] == pytest.approx(expected, abs=1e-12)
            assert iou[i, j] == pytest.approx(top_k_iou(a, b, 20))
    with pytest.raises(ValueError, match="shapes differ"):
        pairwise_agreement([maps[0], maps[0][:2]])
