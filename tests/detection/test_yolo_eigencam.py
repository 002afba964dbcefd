"""Eigen-CAM by name on a YOLO detector: ``xb.explain(yolo, images, "gradcam.EigenCAM")``; other CAMs refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import module_state

import xai_bridge as xb

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")
gc = pytest.importorskip("pytorch_grad_cam")
from test_yolo import _built, _image, offline  # noqa: E402, F401  (offline: no connection leaves the machine)


@pytest.fixture(scope="module")
def yolo() -> Any:
    return _built("yolov8n.yaml")


@pytest.fixture(scope="module")
def det(yolo: Any) -> Any:
    from xai_bridge.adapters.models.yolo import YOLODetector

    return YOLODetector(yolo, imgsz=64, conf=0.001)


def _assert_same(by_name: xb.Explanation, direct: xb.Explanation) -> None:
    scale = float(np.abs(direct.attributions).max())  # raw Eigen-CAM maps of a random YOLO are ~1e-7
    assert scale > 0
    np.testing.assert_allclose(by_name.attributions, direct.attributions, atol=1e-6 * scale, rtol=0)
    np.testing.assert_array_equal(by_name.extras["boxes"], direct.extras["boxes"])
    np.testing.assert_array_equal(by_name.target_names, direct.target_names)
    np.testing.assert_array_equal(by_name.scores, direct.scores)
    assert by_name.method == direct.method == "gradcam.EigenCAM"


def test_eigencam_by_name_is_the_detectors_eigencam_and_the_tutorials(yolo: Any, det: Any) -> None:
    from pytorch_grad_cam import EigenCAM

    image = _image()
    before = module_state(yolo.model)
    [exp] = xb.explain(det, image, "gradcam.EigenCAM", targets=xb.top_k(2))
    assert module_state(yolo.model) == before
    [direct] = det.eigencam(image, targets=xb.top_k(2))
    _assert_same(exp, direct)
    assert exp.attributions.shape == (1, 2, 64, 64) and np.ptp(exp.attributions[0, 0]) > 0
    # pytorch-grad-cam's YOLO tutorial called directly: the layer before the head, no gradients, min-max scaled
    net = yolo.model.eval()
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    library = EigenCAM(net, [net.model[-2]])(x, targets=[lambda out: out])[0]
    raw = exp.attributions[0, 0]
    np.testing.assert_allclose((raw - raw.min()) / (raw.max() - raw.min()), library, atol=1e-4)


def test_the_layer_by_index_name_or_the_librarys_alias(yolo: Any, det: Any) -> None:
    image = _image()
    [direct] = det.eigencam(image, targets=xb.top_k(1), layer=-5)
    name = f"model.{len(yolo.model.model) - 5}"
    for given in ({"layer": -5}, {"layer": name}, {"target_layers": [yolo.model.model[-5]]}):
        [exp] = xb.explain(det, image, "gradcam.EigenCAM", targets=xb.top_k(1), **given)
        _assert_same(exp, direct)
    [default] = det.eigencam(image, targets=xb.top_k(1))
    scaled = [a / np.abs(a).max() for a in (default.attributions, direct.attributions)]
    assert np.abs(scaled[0] - scaled[1]).max() > 0.1  # another layer, another map


def test_a_yolo_model_is_explained_by_name_with_no_wrapper(yolo: Any) -> None:
    from xai_bridge.adapters.models.yolo import YOLODetector

    image = _image()
    [exp] = xb.explain(yolo, image, "gradcam.EigenCAM", targets=xb.top_k(1))
    [direct] = YOLODetector(yolo).eigencam(image, targets=xb.top_k(1))
    _assert_same(exp, direct)
    assert exp.params["imgsz"] == 640 and exp.params["detector"] == "YOLODetector"


@pytest.mark.parametrize("method", ["gradcam.GradCAM", "gradcam.HiResCAM", "captum.IntegratedGradients"])
def test_gradient_methods_are_refused_naming_eigencam(det: Any, method: str) -> None:
    with pytest.raises(xb.MethodNotApplicableError) as err:
        xb.explain(det, _image(), method, targets=xb.top_k(1))
    assert str(err.value).startswith(
        f"method: {method} needs gradients, but YOLODetector is a black-box detector; "
        "use gradcam.EigenCAM (no gradients) or a perturbation method (builtin.DRISE"
    )
    assert "\n" not in str(err.value)


def test_bad_parameters_are_one_line(det: Any) -> None:
    image = _image()
    cases = [
        ({"budget": 10}, r"^budget: gradcam.EigenCAM on a YOLO detector makes one forward pass"),
        ({"iou_threshold": 0.3}, r"^iou_threshold: gradcam.EigenCAM on a YOLO detector .* drop iou_threshold=$"),
        ({"eigen_smooth": True}, r"^gradcam.EigenCAM: unknown parameter\(s\) \['eigen_smooth'\]; valid .*\['layer'\]"),
        ({"layer": 99}, r"^layer: 99 is not a layer of the network \(23 layers\); pass an index"),
        ({"layer": "model.head"}, r"^layer: 'model.head' is not a layer"),
        ({"layer": torch.nn.Conv2d(3, 3, 1)}, r"^layer: expected an index, a dotted name or a module of the YOLO"),
    ]
    for params, message in cases:
        with pytest.raises(xb.ParameterError, match=message) as err:
            xb.explain(det, image, "gradcam.EigenCAM", targets=xb.top_k(1), **params)
        assert "\n" not in str(err.value)


def test_explain_many_runs_eigencam_beside_a_perturbation_method(det: Any) -> None:
    image = _image()
    many = xb.explain_many(
        det, image, ["gradcam.EigenCAM", ("builtin.DRISE", {"n_masks": 8, "grid": 4})], targets=xb.top_k(1)
    )
    [eigen], [drise] = many["gradcam.EigenCAM"], many["builtin.DRISE"]
    [direct] = det.eigencam(image, targets=xb.top_k(1))
    _assert_same(eigen, direct)
    np.testing.assert_array_equal(drise.extras["boxes"], direct.extras["boxes"])
    assert drise.method == "builtin.DRISE" and np.ptp(drise.attributions) > 0
