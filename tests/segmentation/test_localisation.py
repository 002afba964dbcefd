"""Known ground truth: a tiny FCN trained in the test to segment a bright square; its explanations find the square."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import module_state
from seg_models import square_batch, trained_fcn

import xai_bridge as xb
from xai_bridge.segmentation import region_scores

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def fcn() -> object:
    return trained_fcn()


@pytest.fixture(scope="module")
def squares() -> tuple[np.ndarray, np.ndarray]:
    return square_batch(2, np.random.default_rng(7))


def inside_share(attributions: np.ndarray, mask: np.ndarray) -> float:
    """The share of the positive mass of one map that lies inside ``mask``."""
    positive = np.clip(attributions, 0, None)
    return float(positive[mask].sum() / positive.sum())


def test_the_trained_fcn_segments_the_square(fcn: object, squares: tuple[np.ndarray, np.ndarray]) -> None:
    images, masks = squares
    logits = xb.TorchvisionSegmenter(fcn).segment(images)
    iou = [
        (lo.argmax(0).astype(bool) & m).sum() / (lo.argmax(0).astype(bool) | m).sum()
        for lo, m in zip(logits, masks, strict=True)
    ]
    assert min(iou) > 0.8


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("gradcam.GradCAM", {}),
        ("captum.IntegratedGradients", {"n_steps": 16}),
        ("builtin.Occlusion", {"window": 4, "stride": 4}),
    ],
)
def test_class_1_region_explanation_lies_in_the_square(
    fcn: object, squares: tuple[np.ndarray, np.ndarray], method: str, params: dict[str, object]
) -> None:
    images, masks = squares
    before = module_state(fcn)
    exp = xb.explain(fcn, images, method, targets=1, **params)
    assert module_state(fcn) == before
    assert exp.attributions.shape == (2, 1, 32, 32)
    for i in range(2):
        assert exp.extras["regions"][i, 0].sum() > 0.8 * masks[i].sum()
        assert inside_share(exp.attributions[i, 0], masks[i]) > 0.6, (method, i)


def test_integrated_gradients_add_up_to_the_region_score(fcn: object, squares: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = squares
    exp = xb.explain(fcn, images[:1], "captum.IntegratedGradients", targets=1, n_steps=64, baselines=0)
    regions, classes = exp.extras["regions"][0], exp.targets[0]
    seg = xb.TorchvisionSegmenter(fcn)
    scores = region_scores(seg.segment(np.stack([images[0], np.zeros_like(images[0])])), regions, classes)
    assert exp.attributions[0, 0].sum() == pytest.approx(scores[0, 0] - scores[1, 0], rel=0.02)
