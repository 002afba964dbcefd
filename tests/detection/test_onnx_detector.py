"""ONNX detectors: an export of torchvision's Faster R-CNN detects as the torch model does, D-RISE through it, bad graphs."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from helpers import assert_close, random_images

import xai_bridge as xb

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
detection = pytest.importorskip("torchvision.models.detection")

from xai_bridge.adapters.models.detectors import TorchvisionDetector  # noqa: E402
from xai_bridge.adapters.models.onnx_detectors import OnnxDetector, _output_names  # noqa: E402

NAMES = ["background", "red", "blue"]


def _export(net: Any, example: Any, path: Path, **kwargs: Any) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer warnings
        torch.onnx.export(net, example, str(path), opset_version=17, dynamo=False, **kwargs)
    return path


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A random-weight Faster R-CNN (every box kept) and its ONNX export, at 64 pixels."""
    torch.manual_seed(0)
    net = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=64
    ).eval()
    net.roi_heads.score_thresh = 0.0
    path = tmp_path_factory.mktemp("onnx") / "frcnn.onnx"
    names = {"input_names": ["image"], "output_names": ["boxes", "labels", "scores"]}
    _export(net, ([torch.rand(3, 64, 64)],), path, dynamic_axes={"image": {1: "h", 2: "w"}}, **names)
    return net, path


@pytest.mark.slow
def test_onnx_detections_equal_the_torch_models(exported: tuple[Any, Path]) -> None:
    net, path = exported
    det = OnnxDetector(path, class_names=NAMES)
    assert det.outputs == {"boxes": "boxes", "labels": "labels", "scores": "scores"}
    for shape in ((2, 64, 64, 3), (1, 48, 80, 3)):
        images = random_images(shape, seed=shape[1])
        found = det.detect(images)
        with torch.no_grad():
            direct = net([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images])
        for f, d in zip(found, direct, strict=True):
            assert len(f) == len(d["scores"]) > 0
            np.testing.assert_array_equal(f.labels, d["labels"].numpy())
            np.testing.assert_allclose(f.boxes, d["boxes"].numpy(), atol=1e-3)
            np.testing.assert_allclose(f.scores, d["scores"].numpy(), atol=1e-3)


@pytest.mark.slow
def test_drise_through_onnx_equals_drise_through_torch(exported: tuple[Any, Path]) -> None:
    net, path = exported
    image = random_images((64, 64, 3), seed=5)
    kwargs = {"targets": xb.top_k(2), "n_masks": 8, "grid": 4, "seed": 1}
    [onnx] = xb.explain_detections(OnnxDetector(path, class_names=NAMES), image, "builtin.DRISE", **kwargs)
    [torch_] = xb.explain_detections(TorchvisionDetector(net, class_names=NAMES), image, "builtin.DRISE", **kwargs)
    assert onnx.attributions.shape == (1, 2, 64, 64) and list(onnx.target_names[0]) == list(torch_.target_names[0])
    np.testing.assert_allclose(onnx.extras["boxes"], torch_.extras["boxes"], atol=1e-3)
    assert_close(onnx.attributions, torch_.attributions, rel=1e-3)


class _Corner(torch.nn.Module):
    """A fixed-size graph: one box over the top-left quarter, its score the mean brightness."""

    def forward(self, x: Any) -> tuple[Any, Any, Any]:
        h, w = x.shape[-2:]
        box = torch.tensor([[0.0, 0.0, w / 2, h / 2]]) + 0 * x.mean()
        return box, torch.ones(1, dtype=torch.int64), x.mean().reshape(1)


def test_a_fixed_size_graph_is_fed_resized_images_and_its_boxes_mapped_back(tmp_path: Path) -> None:
    path = _export(_Corner(), (torch.rand(1, 3, 32, 32),), tmp_path / "corner.onnx", input_names=["x"])
    det = OnnxDetector(path, pixels="byte")
    unnamed = [o.name for o in det.session.get_outputs()]  # the exporter's own names: told apart by type and shape
    assert [det.outputs[k] for k in ("boxes", "labels", "scores")] == unnamed
    image = np.full((48, 80, 3), 100, np.uint8)
    [found] = det.detect(image[None])
    np.testing.assert_allclose(found.boxes, [[0, 0, 40, 24]])  # the quarter of the 80 x 48 image
    np.testing.assert_allclose(found.scores, [100], rtol=1e-5)  # pixels="byte": fed 0..255
    np.testing.assert_array_equal(found.labels, [1])


def _session(*outputs: tuple[str, str, list[Any]]) -> Any:
    return SimpleNamespace(get_outputs=lambda: [SimpleNamespace(name=n, type=t, shape=s) for n, t, s in outputs])


def test_outputs_are_told_apart_by_name_then_by_type_else_given() -> None:
    f, i = "tensor(float)", "tensor(int64)"
    named = _session(("det_scores", f, ["k"]), ("pred_boxes", f, ["k", 4]), ("class_ids", i, ["k"]))
    assert _output_names(named, None) == {"boxes": "pred_boxes", "labels": "class_ids", "scores": "det_scores"}
    typed = _session(("3012", f, ["k", 4]), ("3013", i, ["k"]), ("3014", f, ["k"]))
    assert _output_names(typed, None) == {"boxes": "3012", "labels": "3013", "scores": "3014"}
    two = _session(("a", f, ["k", 4]), ("b", f, ["k"]), ("c", f, ["k"]), ("d", i, ["k"]))
    with pytest.raises(xb.ModelInputError, match=r"^outputs: cannot tell which .* pass outputs=\{'boxes'"):
        _output_names(two, None)
    assert _output_names(two, {"boxes": "a", "labels": "d", "scores": "c"})["scores"] == "c"
    with pytest.raises(xb.ParameterError, match=r"^outputs: expected \{'boxes'.*got \{'boxes': 'z'\}"):
        _output_names(two, {"boxes": "z"})


def test_a_graph_without_boxes_is_refused_in_one_line(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    path = _export(net, (torch.rand(1, 3, 16, 16),), tmp_path / "cls.onnx", output_names=["logits"])
    with pytest.raises(xb.ModelInputError, match=r"^model: the ONNX graph's outputs \[\('logits'.* hold no boxes"):
        OnnxDetector(path)
    with pytest.raises(xb.ParameterError, match=r"^pixels: expected 'unit'"):
        OnnxDetector(path, pixels="float")
