"""``explain_many`` on segmenters, one plan for every subject, and methods with targets of their own refused."""

from __future__ import annotations

import numpy as np
import pytest
from seg_models import ColourSegmenter, scene
from xai_bridge.adapters.models.detectors import DetectionModel

import xai_bridge as xb
from xai_bridge.many import Explanations


def test_explain_many_on_a_segmenter_equals_explain_per_method() -> None:
    methods = [("builtin.RISE", {"n_masks": 40}), ("builtin.Occlusion", {"window": 8, "stride": 8})]
    seg = ColourSegmenter()
    many = xb.explain_many(seg, scene(), methods, targets=["red", "blue"], seed=2)
    assert isinstance(many, Explanations) and list(many) == ["builtin.RISE", "builtin.Occlusion"]
    rise = xb.explain(ColourSegmenter(), scene(), "builtin.RISE", targets=["red", "blue"], n_masks=40, seed=2)
    occ = xb.explain(ColourSegmenter(), scene(), "builtin.Occlusion", targets=["red", "blue"], window=8, stride=8)
    for got, alone in ((many["builtin.RISE"], rise), (many["builtin.Occlusion"], occ)):
        np.testing.assert_array_equal(got.attributions, alone.attributions)
        np.testing.assert_array_equal(got.extras["regions"], alone.extras["regions"])
        assert got.target_names.tolist() == [["red (7.8% of pixels)", "blue (15.0% of pixels)"]]
    budgeted = xb.explain_many(ColourSegmenter(), scene(), ["builtin.RISE"], targets=["red", "blue"], budget=40, seed=2)
    np.testing.assert_array_equal(budgeted["builtin.RISE"].attributions, rise.attributions)  # budget=40 is n_masks=40


def test_one_bad_method_refuses_the_whole_list_before_any_segmenting() -> None:
    seg = ColourSegmenter()
    with pytest.raises(xb.MethodNotApplicableError, match=r"^method: 'gradcam.GradCAM' needs gradients, but Colour"):
        xb.explain_many(seg, scene(), ["builtin.RISE", "gradcam.GradCAM"])
    with pytest.raises(xb.ParameterError, match=r"^methods: each method may appear once"):
        xb.explain_many(seg, scene(), ["builtin.RISE", ("builtin.RISE", {"n_masks": 8})])
    with pytest.raises(xb.ParameterError, match=r"^budget: builtin.RISE got both budget=8 and its own n_masks=4"):
        xb.explain_many(seg, scene(), [("builtin.RISE", {"n_masks": 4})], budget=8)
    with pytest.raises(xb.MethodNotApplicableError, match=r"^method: builtin.DRISE explains a detector's outputs"):
        xb.explain(seg, scene(), "builtin.DRISE")
    assert seg.images == 0


def _quadrants(images: np.ndarray) -> list[dict[str, np.ndarray]]:
    boxes = np.array([[0, 0, 20, 16], [20, 16, 40, 32]], float)
    return [{"boxes": boxes, "labels": np.array([1, 2]), "scores": np.array([0.9, 0.8])} for _ in images]


def test_deep_feature_factorization_is_refused_on_detectors_and_segmenters_before_running() -> None:
    """Its maps are concepts of its own, not one per detection or region: one line, nothing run."""
    pytest.importorskip("pytorch_grad_cam")
    calls: list[int] = []

    def detect(images: np.ndarray) -> list[dict[str, np.ndarray]]:
        calls.append(len(images))
        return _quadrants(images)

    detector = DetectionModel(detect, class_names=["background", "a", "b"])
    for subject, what in ((detector, "one map per detection"), (ColourSegmenter(), "one map per region")):
        with pytest.raises(xb.MethodNotApplicableError) as err:
            xb.explain(subject, scene(), "gradcam.DeepFeatureFactorization")
        message = str(err.value)
        assert message.startswith("method: gradcam.DeepFeatureFactorization ") and what in message, message
        assert "\n" not in message
        with pytest.raises(xb.MethodNotApplicableError):
            xb.explain_many(subject, scene(), ["builtin.RISE", "gradcam.DeepFeatureFactorization"])
    assert calls == []


def test_explain_many_on_a_detector_plans_once_and_keeps_its_results_per_image() -> None:
    detector = DetectionModel(_quadrants, class_names=["background", "a", "b"])
    many = xb.explain_many(detector, scene(), ["builtin.DRISE", "builtin.RISE"], targets=xb.top_k(2), budget=6)
    assert list(many) == ["builtin.DRISE", "builtin.RISE"]
    for [exp] in many.values():
        assert exp.params["n_masks"] == 6 and exp.extras["boxes"].shape == (1, 2, 4)
    with pytest.raises(xb.ParameterError, match=r"^budget: builtin.Occlusion has no evaluation budget"):
        xb.explain_many(detector, scene(), ["builtin.Occlusion"], budget=6)
