"""Ultralytics YOLO (optional extra): predict's detections, Eigen-CAM as pytorch-grad-cam computes it, D-RISE, offline."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import module_state, random_images

import xai_bridge as xb

torch = pytest.importorskip("torch")
# before ultralytics is imported: no update checks or analytics, and its settings file in a temporary folder
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "xai-bridge-tests-ultralytics"))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """No connection leaves the machine: any attempt is recorded (and refused), and fails the test."""
    attempts: list[Any] = []
    connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(address)
            raise OSError(f"network blocked in tests: {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield attempts
    assert not attempts, f"a download was attempted: {attempts}"


@pytest.fixture(scope="module")
def yolo() -> Any:
    """A YOLOv8n built from its yaml config: random weights, nothing downloaded.

    Its class biases start at a prior of ~1e-5 (no detection above any sensible
    threshold); they are set to random values around 0 so that it finds boxes.
    """
    pytest.importorskip("ultralytics")
    return _built("yolov8n.yaml")


@pytest.fixture(scope="module")
def det(yolo: Any) -> Any:
    """The detector over it, shared and warmed up: the first predict builds its predictor and imports much (seconds)."""
    from xai_bridge.adapters.models.yolo import YOLODetector

    detector = YOLODetector(yolo, imgsz=64, conf=0.001)
    detector.detect(_image()[None])
    return detector


def _built(config: str) -> Any:
    import ultralytics

    torch.manual_seed(0)
    model = ultralytics.YOLO(config)
    with torch.no_grad():
        for branch in model.model.model[-1].cv3:
            branch[-1].bias.normal_(0, 1)
    return model


def _image() -> np.ndarray:
    img = random_images((64, 64, 3), seed=4)
    img[16:48, 20:44] = (250, 40, 40)  # something to find
    return img


def test_detect_is_predict_on_the_image_and_leaves_the_model_as_it_was(yolo: Any, det: Any) -> None:
    net = yolo.model.train()
    before, predictor = module_state(net), yolo.predictor
    images = np.stack([_image(), random_images((64, 64, 3), seed=5)])
    found = det.detect(images)
    direct = yolo.predict([im[..., ::-1] for im in images], imgsz=64, conf=0.001, verbose=False)  # BGR, as cv2 reads
    yolo.predictor = predictor
    for f, d in zip(found, direct, strict=True):
        assert len(f) > 0
        np.testing.assert_allclose(f.boxes, d.boxes.xyxy.numpy(), rtol=1e-6)
        np.testing.assert_allclose(f.scores, d.boxes.conf.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(f.labels, d.boxes.cls.numpy().astype(int))
    assert det.class_names == [yolo.names[i] for i in range(80)]
    assert module_state(net) == before and net.training and yolo.predictor is predictor


def test_eigencam_is_pytorch_grad_cams_eigencam_raw(yolo: Any, det: Any) -> None:
    from pytorch_grad_cam import EigenCAM

    image = _image()
    [exp] = det.eigencam(image, targets=xb.top_k(2))
    assert exp.attributions.shape == (1, 2, 64, 64) and exp.method == "gradcam.EigenCAM"
    np.testing.assert_array_equal(exp.attributions[0, 0], exp.attributions[0, 1])  # class-agnostic
    top = det.detect(image[None])[0]
    np.testing.assert_allclose(exp.extras["boxes"][0], top.boxes[np.argsort(-top.scores)[:2]], rtol=1e-6)
    # the tutorial's recipe called directly: the layer before the head, the image in [0, 1]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    net = yolo.model.eval()
    library = EigenCAM(net, [net.model[-2]])(x, targets=[lambda out: out])[0]
    raw = exp.attributions[0, 0]
    scaled = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(scaled, library, atol=1e-4)
    assert np.ptp(raw) > 0


def test_perturbation_methods_explain_yolo_and_gradient_methods_are_refused(yolo: Any, det: Any) -> None:
    image = _image()
    [exp] = xb.explain_detections(det, image, "builtin.DRISE", targets=xb.top_k(1), n_masks=8, grid=4)
    assert exp.attributions.shape == (1, 1, 64, 64) and np.isfinite(exp.attributions).all()
    assert np.ptp(exp.attributions) > 0
    with pytest.raises(xb.MethodNotApplicableError) as err:
        xb.explain_detections(det, image, "captum.IntegratedGradients", targets=xb.top_k(1))
    assert "\n" not in str(err.value)


def test_a_segmentation_model_gives_its_boxes(yolo: Any) -> None:
    from xai_bridge.adapters.models.yolo import YOLODetector

    seg = YOLODetector(_built("yolo11n-seg.yaml"), imgsz=64, conf=0.001)
    [found] = seg.detect(_image()[None])
    assert len(found) > 0 and found.boxes.shape[1] == 4 and seg.yolo.task == "segment"


def test_bad_input_is_one_line(yolo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ultralytics
    from xai_bridge.adapters.models.detector_kinds import wrap_detector
    from xai_bridge.adapters.models.yolo import YOLODetector

    with pytest.raises(xb.ModelInputError, match=r"^model: a YOLO classify model has no boxes"):
        YOLODetector(ultralytics.YOLO("yolov8n-cls.yaml"))
    with pytest.raises(xb.ModelInputError, match=r"^model: no file at .*yolo11n.pt.* downloads nothing"):
        YOLODetector(str(tmp_path / "yolo11n.pt"))
    with pytest.raises(xb.ModelInputError, match=r"^model: expected an ultralytics YOLO model"):
        YOLODetector(torch.nn.Linear(2, 2))
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # as if the extra were not installed
    with pytest.raises(xb.LibraryNotInstalledError, match=r'pip install "xai-bridge\[yolo\]"'):
        YOLODetector(yolo)
    with pytest.raises(xb.LibraryNotInstalledError, match=r'^YOLODetector: needs ultralytics .*\[yolo\]"$'):
        wrap_detector("weights/yolo11n.pt")  # what the routing does with a YOLO-looking path


def test_a_yolo_model_is_recognised_as_a_detector(yolo: Any) -> None:
    from xai_bridge.adapters.models.detector_kinds import is_known_detector, wrap_detector
    from xai_bridge.adapters.models.yolo import YOLODetector

    assert is_known_detector(yolo) and is_known_detector("yolo11n-seg.yaml") and not is_known_detector("net.pt")
    assert isinstance(wrap_detector(yolo), YOLODetector) and not isinstance(
        wrap_detector(yolo), xb.detection.GradientDetector
    )


def test_without_the_extra_a_yolo_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from xai_bridge.adapters.models.detector_kinds import is_known_detector, wrap_detector

    monkeypatch.setitem(sys.modules, "ultralytics", None)  # runs where the extra is not installed too
    assert is_known_detector("yolov8n.pt")
    with pytest.raises(xb.LibraryNotInstalledError, match=r'^YOLODetector: needs ultralytics .*"xai-bridge\[yolo\]"$'):
        xb.YOLODetector("yolov8n.pt")
    with pytest.raises(xb.LibraryNotInstalledError, match=r"xai-bridge\[yolo\]"):
        wrap_detector("models/yolo11n-seg.yaml")
