"""Hugging Face object detectors: the processor's detections, detect_torch's parity with them, D-RISE, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import module_state, random_images

import xai_bridge as xb

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from xai_bridge.adapters._torch import model_guard  # noqa: E402
from xai_bridge.adapters.models.hf_detectors import HFDetector  # noqa: E402

LABELS = {0: "red", 1: "blue", 2: "green"}


def _randomise(model: Any) -> Any:
    """Spread the weights (DETR zero-initialises its box head: every query would find the same box)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def _detr() -> tuple[Any, Any]:
    bb = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", out_features=["stage2"]
    )
    cfg = transformers.DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=bb,
        num_queries=10,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    processor = transformers.DetrImageProcessor(size={"shortest_edge": 48, "longest_edge": 64})
    return _randomise(transformers.DetrForObjectDetection(cfg)), processor


def _yolos() -> tuple[Any, Any]:
    cfg = transformers.YolosConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        image_size=[32, 32],
        patch_size=8,
        num_detection_tokens=6,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    processor = transformers.YolosImageProcessor(size={"shortest_edge": 32, "longest_edge": 48})
    return _randomise(transformers.YolosForObjectDetection(cfg)), processor


@pytest.fixture(scope="module", params=["detr", "yolos"])
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny detector and its processor saved with save_pretrained (nothing downloaded)."""
    model, processor = {"detr": _detr, "yolos": _yolos}[request.param]()
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _pixels(images: np.ndarray) -> Any:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).requires_grad_(True)


def test_detect_is_the_processors_post_processing_with_probabilities(folder: Path) -> None:
    det = HFDetector(folder, threshold=0.0)
    model, processor = det.module, det.processor
    images = random_images((2, 40, 50, 3))
    found = det.detect(images)
    with torch.no_grad():
        outputs = model(**processor(images=list(images), return_tensors="pt"))
    direct = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(40, 50)] * 2)
    full = outputs.logits.softmax(-1)
    for i in range(2):
        np.testing.assert_allclose(found[i].boxes, direct[i]["boxes"].numpy(), rtol=1e-6)
        np.testing.assert_allclose(found[i].scores, direct[i]["scores"].numpy(), rtol=1e-6)
        assert found[i].probabilities is not None and found[i].objectness is not None
        # each detection's query: its probabilities peak at its label with its score; objectness = 1 - p(no object)
        np.testing.assert_array_equal(found[i].probabilities.argmax(1), found[i].labels)
        np.testing.assert_allclose(found[i].probabilities.max(1), found[i].scores, rtol=1e-6)
        np.testing.assert_allclose(np.sort(found[i].objectness), np.sort(1 - full[i, :, -1].numpy()), rtol=1e-5)
    assert det.class_names == ["red", "blue", "green"]


def test_detect_torch_equals_detect_and_has_gradients(folder: Path) -> None:
    det = HFDetector(folder, threshold=0.0)
    size = det.processor(images=[random_images((40, 50, 3))], return_tensors="pt")["pixel_values"].shape[-2:]
    for images, tol in ((random_images((2, *size, 3), seed=1), 1e-4), (random_images((2, 40, 50, 3)), 3e-2)):
        # at the processor's input size nothing is resized: equal; resized, the processor's uint8 rounding differs
        found = det.detect(images)
        pixels = _pixels(images)
        with model_guard(det.module):
            out = det.detect_torch(pixels)
        for f, o in zip(found, out, strict=True):
            np.testing.assert_array_equal(f.labels, o["labels"].numpy())
            np.testing.assert_allclose(o["boxes"].detach().numpy(), f.boxes, atol=tol * 10)
            np.testing.assert_allclose(o["scores"].detach().numpy(), f.scores, atol=tol)
            np.testing.assert_allclose(o["probabilities"].detach().numpy(), f.probabilities, atol=tol)
        out[0]["scores"][0].backward()
        assert pixels.grad is not None and float(pixels.grad[0].abs().sum()) > 0 and not pixels.grad[1].any()


def test_drise_runs_through_explain_detections_and_leaves_the_model_as_it_was(folder: Path) -> None:
    det = HFDetector(folder)
    model = det.module.train()
    model.class_labels_classifier.requires_grad_(False)
    before, config = module_state(model), model.config.to_dict()
    image = random_images((40, 50, 3), seed=2)
    [exp] = xb.explain_detections(det, image, "builtin.DRISE", targets=xb.top_k(2), n_masks=16, grid=4)
    top = det.detect(image[None])[0]
    order = np.argsort(-top.scores)[:2]
    assert exp.attributions.shape == (1, 2, 40, 50) and np.isfinite(exp.attributions).all()
    assert np.ptp(exp.attributions[0, 0]) > 0
    np.testing.assert_allclose(exp.extras["boxes"][0], top.boxes[order], rtol=1e-5)
    assert list(exp.target_names[0]) == [f"{LABELS[int(top.labels[i])]} {top.scores[i]:.2f}" for i in order]
    assert module_state(model) == before and model.config.to_dict() == config and model.training


def test_an_object_passed_in_and_a_name_load_the_same_detector(folder: Path) -> None:
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    model = AutoModelForObjectDetection.from_pretrained(folder)
    image = random_images((1, 40, 50, 3), seed=3)
    by_name = HFDetector.from_pretrained(folder).detect(image)[0]
    by_object = HFDetector(model, AutoImageProcessor.from_pretrained(folder)).detect(image)[0]
    near = HFDetector(model).detect(image)[0]  # the processor saved at model.name_or_path
    np.testing.assert_allclose(by_object.scores, by_name.scores)
    np.testing.assert_allclose(near.boxes, by_name.boxes)


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    cfg = transformers.ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, image_size=16, patch_size=8
    )
    classifier = transformers.ViTForImageClassification(cfg)
    with pytest.raises(xb.ModelInputError, match=r"^model: expected an AutoModelForObjectDetection .*got ViTFor"):
        HFDetector(classifier, object())
    classifier.save_pretrained(tmp_path / "vit")
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path / "vit")
    with pytest.raises(xb.ModelInputError, match=r"^model: .*ViTConfig \(ViTForImageClassification\), not an Auto"):
        HFDetector(tmp_path / "vit")
    model, _ = _detr()
    model.save_pretrained(tmp_path / "bare")
    with pytest.raises(xb.ModelInputError, match=r"^processor: no preprocessor_config.json in .*bare"):
        HFDetector(tmp_path / "bare")
    with pytest.raises(xb.ModelInputError, match=r"^processor: expected the model's object detection image processor"):
        HFDetector(model, transformers.ViTImageProcessor())
    with pytest.raises(xb.ModelInputError, match=r"^model: no config.json in"):
        HFDetector(tmp_path)


def test_a_detection_model_is_recognised_as_a_detector(folder: Path) -> None:
    from transformers import AutoModelForObjectDetection
    from xai_bridge.adapters.models.detector_kinds import is_known_detector, wrap_detector

    model = AutoModelForObjectDetection.from_pretrained(folder)
    assert is_known_detector(model) and isinstance(wrap_detector(model), HFDetector)
    assert isinstance(wrap_detector(model), xb.detection.GradientDetector)
    assert wrap_detector(torch.nn.Linear(2, 2)) is None and not is_known_detector("net.onnx")


def test_the_default_cam_layer_is_the_projection_into_the_transformer(folder: Path) -> None:
    det = HFDetector(folder)
    if det.module.config.model_type == "detr":
        assert det.cam_layer == "model.input_projection"
        assert isinstance(det.module.get_submodule(det.cam_layer), torch.nn.Conv2d)
    else:  # YOLOS: a ViT, the automatic choice
        assert det.cam_layer is None
