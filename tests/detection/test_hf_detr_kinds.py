"""Conditional DETR, Deformable DETR and RT-DETR (sigmoid heads): recognised, detect_torch = detect, Grad-CAM, D-RISE.

Each is a tiny model built from its config with random weights, saved with
``save_pretrained`` beside its processor and loaded back (nothing downloaded:
a transformers ResNet backbone, no timm, no pretrained backbone).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import module_state, random_images

import xai_bridge as xb

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget  # noqa: E402
from xai_bridge.adapters._torch import model_guard  # noqa: E402
from xai_bridge.adapters.methods.builtin import sample_masks  # noqa: E402
from xai_bridge.adapters.models.hf_detectors import HFDetector  # noqa: E402

from xai_bridge.detection.detections import similarity  # noqa: E402

LABELS = {0: "red", 1: "blue", 2: "green"}
NAMED = {"id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}}
SMALL = {"num_queries": 10, "encoder_layers": 1, "encoder_attention_heads": 2, "decoder_attention_heads": 2}
FFN = {"encoder_ffn_dim": 16, "decoder_ffn_dim": 16}


def _resnet(stages: int, cls: Any = None) -> Any:
    """A two- or three-stage basic ResNet from transformers (no timm, nothing pretrained)."""
    sizes = [8, 16, 16][:stages]
    return (cls or transformers.ResNetConfig)(
        embedding_size=8,
        hidden_sizes=sizes,
        depths=[1] * stages,
        layer_type="basic",
        out_features=[f"stage{i + 1}" for i in range(stages)],
    )


def _conditional_detr() -> tuple[Any, Any]:
    bb = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", out_features=["stage2"]
    )
    cfg = transformers.ConditionalDetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=bb,
        d_model=16,
        decoder_layers=1,
        **SMALL,
        **FFN,
        **NAMED,
    )
    processor = transformers.ConditionalDetrImageProcessor(size={"shortest_edge": 48, "longest_edge": 64})
    return transformers.ConditionalDetrForObjectDetection(cfg), processor


def _deformable_detr() -> tuple[Any, Any]:
    # d_model a multiple of 32 (its GroupNorm), two decoder layers (transformers ties box heads across layers),
    # the multi-scale attention in plain torch (no custom CUDA kernel to build)
    cfg = transformers.DeformableDetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=_resnet(2),
        num_feature_levels=2,
        d_model=32,
        decoder_layers=2,
        encoder_n_points=2,
        decoder_n_points=2,
        disable_custom_kernels=True,
        **SMALL,
        **FFN,
        **NAMED,
    )
    processor = transformers.DeformableDetrImageProcessor(size={"shortest_edge": 48, "longest_edge": 64})
    return transformers.DeformableDetrForObjectDetection(cfg), processor


def _rt_detr() -> tuple[Any, Any]:
    cfg = transformers.RTDetrConfig(
        backbone_config=_resnet(3, transformers.RTDetrResNetConfig),
        use_pretrained_backbone=False,
        d_model=16,
        encoder_hidden_dim=16,
        encoder_in_channels=[8, 16, 16],
        decoder_in_channels=[16, 16, 16],
        feat_strides=[8, 16, 32],
        encode_proj_layers=[2],
        num_feature_levels=3,
        decoder_layers=1,
        decoder_n_points=2,
        num_denoising=0,
        **SMALL,
        **FFN,
        **NAMED,
    )
    return transformers.RTDetrForObjectDetection(cfg), transformers.RTDetrImageProcessor(
        size={"height": 64, "width": 64}
    )


BUILDERS = {"conditional_detr": _conditional_detr, "deformable_detr": _deformable_detr, "rt_detr": _rt_detr}
#: the default CAM layer: the projection of the backbone's last map into the transformer
CAM_LAYERS = {
    "conditional_detr": "model.input_projection",
    "deformable_detr": "model.input_proj.1",
    "rt_detr": "model.encoder_input_proj.2",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: on a shared machine threads only contend (a forward pass 8x slower on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(BUILDERS))
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny detector with spread random weights and its processor, saved with save_pretrained."""
    torch.manual_seed(0)
    model, processor = BUILDERS[request.param]()
    with torch.no_grad():  # spread the weights: zero-initialised box heads would give every query one box
        for p in model.parameters():
            p.normal_(0, 0.3)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(folder: Path) -> Any:
    return transformers.AutoModelForObjectDetection.from_pretrained(folder).eval()


def _pixels(images: np.ndarray) -> Any:
    """The ``[0, 1]`` pixels xai-bridge hands a gradient detector (uint8 * (1 / 255))."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float() * (1 / 255.0) + 0.0


def _assert_scaled(raw: np.ndarray, library: np.ndarray) -> None:
    """``library`` is ``raw`` up to a positive scale and offset.

    pytorch-grad-cam min-max scales a map at the layer's resolution, then
    resizes it to the image; the raw map is resized unscaled. Resizing is
    linear, so the two differ by the scaling's affine map only (not by a
    min-max of the resized map, whose extremes fall between layer cells).
    """
    if not raw.any():  # Grad-CAM's ReLU of a map negative everywhere: both zero
        np.testing.assert_array_equal(library, 0)
        return
    design = np.stack([raw.ravel(), np.ones(raw.size)], axis=1).astype(np.float64)
    (slope, offset), *_ = np.linalg.lstsq(design, library.ravel().astype(np.float64), rcond=None)
    assert slope > 0
    np.testing.assert_allclose(raw * slope + offset, library, atol=1e-5)


def test_recognised_as_a_sigmoid_head_gradient_detector(model: Any) -> None:
    from xai_bridge.adapters.models.detector_kinds import is_known_detector, wrap_detector

    det = wrap_detector(model)
    assert is_known_detector(model) and isinstance(det, HFDetector)
    assert isinstance(det, xb.detection.GradientDetector) and det.class_names == list(LABELS.values())
    assert not det.softmax_head(torch.zeros(1, 10, len(LABELS)))  # one sigmoid per class, no "no object"
    assert det.cam_layer == CAM_LAYERS[model.config.model_type]


def test_detect_is_the_processors_post_processing_with_sigmoid_probabilities(model: Any) -> None:
    det = HFDetector(model, threshold=0.0)
    images = random_images((2, 40, 50, 3))
    found = det.detect(images)
    with torch.no_grad():
        outputs = model(**det.processor(images=list(images), return_tensors="pt"))
    direct = det.processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(40, 50)] * 2)
    for f, d in zip(found, direct, strict=True):
        assert len(f) > 1
        np.testing.assert_allclose(f.boxes, d["boxes"].numpy(), rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(f.scores, d["scores"].numpy(), rtol=1e-6)
        np.testing.assert_array_equal(f.labels, d["labels"].numpy())
        assert f.probabilities is not None and f.objectness is not None
        # each detection's query: the sigmoid of its label is its score, objectness the query's largest sigmoid
        np.testing.assert_allclose(f.probabilities[np.arange(len(f)), f.labels], f.scores, rtol=1e-6)
        np.testing.assert_allclose(f.objectness, f.probabilities.max(1), rtol=1e-6)


def _assert_same(found: Any, out: dict[str, Any], tol: float, ordered: bool) -> None:
    """detect_torch's detections equal detect's, in order; or, resized, each one near a detect one of its label."""
    boxes, scores = out["boxes"].detach().numpy(), out["scores"].detach().numpy()
    labels, probs = out["labels"].numpy(), out["probabilities"].detach().numpy()
    np.testing.assert_allclose(np.sort(scores), np.sort(found.scores), atol=tol)
    if ordered:
        np.testing.assert_array_equal(labels, found.labels)
        np.testing.assert_allclose(boxes, found.boxes, atol=tol)
        np.testing.assert_allclose(probs, found.probabilities, atol=tol)
        np.testing.assert_allclose(out["objectness"].detach().numpy(), found.objectness, atol=tol)
        return
    # near-equal scores of a random model swap places when the processor's uint8 rounding moves them
    for box, label, p in zip(boxes, labels, probs, strict=True):
        near = np.abs(found.boxes - box).max(1) + np.where(found.labels == label, 0, np.inf)
        k = int(near.argmin())
        assert near[k] < tol * 10
        np.testing.assert_allclose(p, found.probabilities[k], atol=tol)


def test_detect_torch_equals_detect_and_has_gradients(model: Any) -> None:
    det = HFDetector(model, threshold=0.0)
    size = det.processor(images=[random_images((40, 50, 3))], return_tensors="pt")["pixel_values"].shape[-2:]
    for images, tol in ((random_images((2, *size, 3), seed=1), 1e-4), (random_images((2, 40, 50, 3)), 3e-2)):
        # at the processor's input size nothing is resized: equal; resized, the processor's uint8 rounding differs
        found = det.detect(images)
        pixels = _pixels(images).requires_grad_(True)
        with model_guard(det.module):
            out = det.detect_torch(pixels)
        for f, o in zip(found, out, strict=True):
            _assert_same(f, o, tol, ordered=tol < 1e-3)
        out[0]["scores"][0].backward()
        assert pixels.grad is not None and float(pixels.grad[0].abs().sum()) > 0 and not pixels.grad[1].any()


class _Detections(torch.nn.Module):
    """The detector as pytorch-grad-cam's detection tutorial expects a model: images in, one dict per image out."""

    def __init__(self, det: HFDetector) -> None:
        super().__init__()
        self.net, self.det = det.module, det

    def forward(self, x: Any) -> Any:
        return self.det.detect_torch(x)


def test_gradcam_through_explain_equals_the_library_on_the_cam_layer(model: Any) -> None:
    image = random_images((40, 50, 3), seed=2)
    before = module_state(model)
    [exp] = xb.explain(model, image, "gradcam.GradCAM", targets=xb.top_k(2))
    assert module_state(model) == before
    det = HFDetector(model)
    top = det.detect(image[None])[0]
    order = np.argsort(-top.scores, kind="stable")[:2]
    assert exp.attributions.shape == (1, 2, 40, 50) and exp.params["layer"] == CAM_LAYERS[model.config.model_type]
    np.testing.assert_allclose(exp.extras["boxes"][0], top.boxes[order], rtol=1e-5)
    np.testing.assert_allclose(exp.scores[0], top.scores[order], rtol=1e-6)
    assert list(exp.target_names[0]) == [f"{LABELS[int(top.labels[i])]} {top.scores[i]:.2f}" for i in order]
    layer = model.get_submodule(exp.params["layer"])
    with model_guard(model):
        for j in range(2):  # pytorch-grad-cam called directly: its FasterRCNNBoxScoreTarget on the same layer
            cam = gc.GradCAM(_Detections(det), [layer])
            try:
                box = exp.extras["boxes"][0, j : j + 1].copy()  # writable, for torch.as_tensor
                lib = cam(_pixels(image[None]), targets=[FasterRCNNBoxScoreTarget([int(exp.targets[0, j])], box)])[0]
            finally:
                cam.activations_and_grads.release()
            _assert_scaled(exp.attributions[0, j], lib)
    model.zero_grad(set_to_none=True)
    assert np.ptp(exp.attributions[0], axis=(1, 2)).max() > 0  # a target's map may be zero: its ReLU


def test_drise_through_explain_equals_the_papers_formula(model: Any) -> None:
    image = random_images((40, 50, 3), seed=2)
    [exp] = xb.explain(model, image, "builtin.DRISE", targets=xb.top_k(2), n_masks=8, grid=4, seed=3)
    det = HFDetector(model)
    targets = det.detect(image[None])[0]
    order = np.argsort(-targets.scores, kind="stable")[:2]
    np.testing.assert_allclose(exp.extras["boxes"][0], targets.boxes[order], rtol=1e-5)
    assert list(exp.target_names[0]) == [f"{LABELS[int(targets.labels[i])]} {targets.scores[i]:.2f}" for i in order]
    masks = sample_masks(8, (40, 50), (4, 4), 0.5, seed=3).masks()
    found = det.detect(np.rint(masks[..., None] * image.astype(np.float32)).astype(np.uint8))
    assert all(f.probabilities is not None for f in found)  # the similarity compares class probabilities
    weights = np.stack([similarity(targets.take(order), f) for f in found])  # (masks, T)
    expected = np.einsum("kt,khw->thw", weights, masks.astype(np.float64)) / 8
    np.testing.assert_allclose(exp.attributions[0], expected, rtol=1e-5, atol=1e-7)
    assert np.ptp(exp.attributions[0, 0]) > 0
