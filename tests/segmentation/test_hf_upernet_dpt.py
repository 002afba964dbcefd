"""Hugging Face UperNet (ConvNeXt and Swin backbones) and DPT segmenters: logits, Grad-CAM and occlusion for a class name.

Tiny models from their configs with random weights, saved with
``save_pretrained`` beside their processor and loaded back (nothing
downloaded: the backbones are transformers configs, nothing pretrained).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import module_state
from seg_models import NAMES, scene

import xai_bridge as xb

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402
from xai_bridge.adapters._torch import model_guard  # noqa: E402

NAMED = {"num_labels": 3, "id2label": dict(enumerate(NAMES)), "label2id": {n: i for i, n in enumerate(NAMES)}}


def _upernet() -> tuple[Any, Any]:
    backbone = transformers.ConvNextConfig(
        hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, out_features=["stage1", "stage2"]
    )
    return _upernet_on(backbone)


def _upernet_swin() -> tuple[Any, Any]:
    backbone = transformers.SwinConfig(
        image_size=32,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1],
        num_heads=[1, 2],
        window_size=4,
        out_features=["stage1", "stage2"],
    )
    return _upernet_on(backbone)


def _upernet_on(backbone: Any) -> tuple[Any, Any]:
    """A tiny UperNet on ``backbone`` (two stages, 16 channels) and a 32x32 processor."""
    config = transformers.UperNetConfig(
        backbone_config=backbone,
        hidden_size=16,
        pool_scales=[1, 2],
        use_auxiliary_head=False,
        auxiliary_in_channels=16,
        **NAMED,
    )
    processor = transformers.SegformerImageProcessor(size={"height": 32, "width": 32})
    return transformers.UperNetForSemanticSegmentation(config), processor


def _dpt() -> tuple[Any, Any]:
    config = transformers.DPTConfig(
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=16,
        image_size=32,
        patch_size=8,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=16,
        use_auxiliary_head=False,
        **NAMED,
    )
    processor = transformers.DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False)
    return transformers.DPTForSemanticSegmentation(config), processor


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: on a shared machine threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BUILDERS = {"upernet": _upernet, "upernet_swin": _upernet_swin, "dpt": _dpt}
SEEDS = {"upernet_swin": 3}  # a random Swin UperNet that predicts "red" somewhere


@pytest.fixture(scope="module", params=list(BUILDERS))
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.manual_seed(SEEDS.get(request.param, 0))
    net, processor = BUILDERS[request.param]()
    with torch.no_grad():  # spread the weights: DPT's initialisation gives logits that barely move (~1e-7)
        for p in net.parameters():
            p.normal_(0, 0.3)
    folder: Path = tmp_path_factory.mktemp(request.param)
    net.save_pretrained(folder)
    processor.save_pretrained(folder)
    return transformers.AutoModelForSemanticSegmentation.from_pretrained(folder).eval()


def _pixels(image: np.ndarray) -> Any:
    """The ``[0, 1]`` pixels xai-bridge hands a gradient segmenter."""
    return torch.from_numpy(image[None]).permute(0, 3, 1, 2).contiguous().float() * (1 / 255.0) + 0.0


def test_recognised_and_the_logits_are_the_processors(model: Any) -> None:
    from transformers import AutoImageProcessor
    from xai_bridge.adapters.models.segmenters import is_hf_segmenter

    processor = AutoImageProcessor.from_pretrained(model.name_or_path)
    seg = xb.HFSegmenter(model)  # the processor saved beside the model
    assert is_hf_segmenter(model) and seg.class_names == NAMES
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)  # the processor's size
    ours = seg.segment(image[None])[0]
    with torch.no_grad():
        out = model(**processor(images=image, return_tensors="pt"))
        ref = torch.nn.functional.interpolate(out.logits, size=(32, 32), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    predicted = processor.post_process_semantic_segmentation(out, target_sizes=[(32, 32)])[0].numpy()
    np.testing.assert_array_equal(ours.argmax(0), predicted)


class _Logits(torch.nn.Module):
    """The segmenter as pytorch-grad-cam's segmentation tutorial wraps a model: pixels in, logits out."""

    def __init__(self, seg: Any) -> None:
        super().__init__()
        self.net, self.seg = seg.module, seg

    def forward(self, x: Any) -> Any:
        return self.seg.segment_torch(x)


def _assert_scaled(raw: np.ndarray, library: np.ndarray) -> None:
    """``library`` is ``raw`` up to a positive scale and offset (the library min-max scales before resizing)."""
    design = np.stack([raw.ravel(), np.ones(raw.size)], axis=1).astype(np.float64)
    (slope, offset), *_ = np.linalg.lstsq(design, library.ravel().astype(np.float64), rcond=None)
    assert slope > 0
    np.testing.assert_allclose(raw * slope + offset, library, atol=1e-4)


def test_gradcam_for_a_class_name_equals_the_librarys_segmentation_recipe(model: Any) -> None:
    image = scene()
    before = module_state(model)
    exp = xb.explain(model, image, "gradcam.GradCAM", targets="red")
    assert module_state(model) == before
    seg = xb.HFSegmenter(model)
    region = seg.segment(image[None])[0].argmax(0) == 1  # the pixels predicted as "red"
    assert exp.attributions.shape == (1, 1, 32, 40) and exp.targets[0, 0] == 1
    assert exp.target_names[0, 0] == f"red ({100 * region.mean():.1f}% of pixels)"
    assert np.ptp(exp.attributions) > 0
    layer = model.get_submodule(exp.params["layer"])
    with model_guard(model):  # SemanticSegmentationTarget(category, mask) on the same layer, called directly
        cam = gc.GradCAM(_Logits(seg), [layer])
        try:
            lib = cam(_pixels(image), targets=[SemanticSegmentationTarget(1, region.astype(np.float32))])[0]
        finally:
            cam.activations_and_grads.release()
    model.zero_grad(set_to_none=True)
    _assert_scaled(exp.attributions[0, 0], lib)


def test_occlusion_for_a_class_name_is_the_drop_of_the_regions_logits(model: Any) -> None:
    image = scene()
    exp = xb.explain(model, image, "builtin.Occlusion", targets="red", window=8, stride=8)
    seg = xb.HFSegmenter(model)
    region = seg.segment(image[None])[0].argmax(0) == 1
    assert exp.attributions.shape == (1, 1, 32, 40) and exp.n_model_evals == 1 + 4 * 5
    occluded = np.stack([image.copy() for _ in range(3)])
    corners = [(0, 0), (8, 16), (24, 32)]
    for k, (y, x) in enumerate(corners):
        occluded[k, y : y + 8, x : x + 8] = 0
    logits = seg.segment(np.concatenate([image[None], occluded]))[:, 1]  # the class's logits, (1 + 3, H, W)
    scores = (logits * region).sum(axis=(1, 2))
    drops = scores[0] - scores[1:]
    assert np.abs(drops).min() > 1e-3 * np.abs(scores[0])  # windows that matter, each its own drop
    rounding = 1e-6 * float(np.abs(logits[0] * region).sum())  # float32 sums over the region, then a difference
    for k, (y, x) in enumerate(corners):  # each window's pixels hold the drop of the region's summed logits
        np.testing.assert_allclose(exp.attributions[0, 0, y : y + 8, x : x + 8], drops[k], rtol=1e-4, atol=rounding)
    assert np.ptp(exp.attributions) > 0
