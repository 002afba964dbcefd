"""Hugging Face, timm and torchvision models explained as they are: their preprocessing, labels and layers.

Every model is tiny and built from a config (nothing is downloaded). For each
library the preprocessing xai-bridge applies is compared with the library's own
(Hugging Face image processors, ``timm.data.create_transform``, torchvision's
``weights.transforms()``) on the same images, Grad-CAM, Integrated Gradients
and LIME run through ``xb.explain`` on the bare module, class names come from
the model, and the module is left exactly as it was.

Interpolation: the numpy path resizes with Pillow, so it equals the PIL-based
pipelines (HF ``*ImageProcessorPil``, torchvision/timm transforms of PIL
images) to float rounding. Hugging Face's default (torchvision) processors
resize uint8 tensors, which differs from Pillow by at most one pixel level; the
torch path (differentiable, in float, without Pillow's rounding to uint8)
differs from both by at most ~1 level. Those bounds are asserted below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hf_tiny import TINY_VISION
from PIL import Image
from torch import nn
from xai_bridge.adapters._torch import hook_count
from xai_bridge.adapters.models.torch import PixelModule

import xai_bridge as xb
from xai_bridge.models import as_model

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

LABELS = {0: "tabby, tabby cat", 1: "golden retriever", 2: "sports car"}
#: One pixel level after normalisation by std 0.5, plus float slack.
LEVEL = 1 / 255 / 0.5 * 1.05


def _images(shape: tuple[int, ...] = (2, 40, 48, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _snapshot(module: nn.Module) -> dict[str, Any]:
    return {
        "training": [m.training for m in module.modules()],
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "grads": [p.grad for p in module.parameters()],
        "hooks": hook_count(module),
        "state": {k: v.clone() for k, v in module.state_dict().items()},
        "flags": [dict(m.__dict__).get("_output_capturing_hooks_installed") for m in module.modules()],
    }


def _assert_unchanged(module: nn.Module, before: dict[str, Any]) -> None:
    after = _snapshot(module)
    for key in ("training", "requires_grad", "hooks", "flags"):
        assert after[key] == before[key], key
    assert all(a is b for a, b in zip(after["grads"], before["grads"], strict=True))
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k


def _torch_prepare(pre: xb.Preprocess, images: np.ndarray) -> np.ndarray:
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return PixelModule(nn.Identity(), pre).prepare(pixels).numpy()


def _three_methods(
    model: Any, images: np.ndarray, target: Any, n_steps: int = 32, num_samples: int = 40, **kw: Any
) -> dict[str, xb.Explanation]:
    return {
        "cam": xb.explain(model, images, "gradcam.GradCAM", targets=target, **kw),
        "ig": xb.explain(model, images, "captum.IntegratedGradients", targets=target, n_steps=n_steps, **kw),
        "lime": xb.explain(model, images, "lime", targets=target, num_samples=num_samples, **kw),
    }


def _check_ig(exp: xb.Explanation) -> None:
    gap = exp.scores - exp.base_scores
    np.testing.assert_allclose(exp.attributions.sum(axis=(2, 3)), gap, rtol=0.05, atol=0.02 * np.abs(gap).max())


# --------------------------------------------------------------------------- Hugging Face


def _save_hf(folder: Path, model: nn.Module, processor: Any) -> None:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.fixture(scope="module")
def hf_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        **TINY_VISION,
        num_labels=3,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    folder = tmp_path_factory.mktemp("vit")
    _save_hf(
        folder,
        transformers.ViTForImageClassification(config),
        transformers.ViTImageProcessor(size={"height": 32, "width": 32}),
    )
    return folder


@pytest.fixture(scope="module")
def hf_convnext_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    config = transformers.ConvNextConfig(
        num_stages=2,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        num_labels=3,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    processor = transformers.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)  # resize 36, crop 32
    folder = tmp_path_factory.mktemp("convnext")
    _save_hf(folder, transformers.ConvNextForImageClassification(config), processor)
    return folder


def test_hf_vit_preprocessing_equals_its_processor(hf_vit_dir: Path) -> None:
    model = transformers.ViTForImageClassification.from_pretrained(hf_vit_dir)
    wrapped = as_model(model)
    pre = wrapped.preprocess
    assert (pre.size, pre.resize, pre.interpolation, pre.mean, pre.std) == (
        (32, 32),
        None,
        "bilinear",
        (0.5,) * 3,
        (0.5,) * 3,
    )
    images = _images()
    pil = transformers.ViTImageProcessorPil.from_pretrained(hf_vit_dir)(list(images), return_tensors="np")[
        "pixel_values"
    ]
    np.testing.assert_allclose(pre.apply(images), pil, atol=1e-5)
    fast = transformers.AutoImageProcessor.from_pretrained(hf_vit_dir)(list(images), return_tensors="pt")[
        "pixel_values"
    ]
    assert np.abs(pre.apply(images) - fast.numpy()).max() <= LEVEL
    assert np.abs(_torch_prepare(pre, images) - pil).max() <= LEVEL
    # the model's outputs through xai-bridge equal the model on its processor's pixels (up to the resize bound)
    with torch.no_grad():
        ref = model(torch.from_numpy(pil)).logits.numpy()
    np.testing.assert_allclose(wrapped.predict(images), ref, atol=0.05)


def test_hf_vit_three_methods_bare_module(hf_vit_dir: Path) -> None:
    model = transformers.ViTForImageClassification.from_pretrained(hf_vit_dir)
    images = _images()
    before = _snapshot(model)
    out = _three_methods(model, images, "tabby cat")
    _assert_unchanged(model, before)
    for exp in out.values():
        assert exp.target_names.tolist() == [["tabby, tabby cat"]] * 2
        assert exp.targets.tolist() == [[0], [0]]
        assert exp.attributions.shape == (2, 1, 40, 48)
    cam = out["cam"]
    assert cam.params["layer"] == "vit.layers.1.layernorm_before"  # last block's first norm: patch tokens live
    grid = cam.params["reshape_transform"]
    assert (grid["__type__"], grid["prefix_tokens"], grid["height"], grid["width"]) == ("TokenGrid", 1, 4, 4)
    assert np.abs(cam.attributions).max() > 0
    _check_ig(out["ig"])
    # LIME: the top-1 output of the unperturbed images equals the scores explain() reports
    np.testing.assert_allclose(out["lime"].scores, out["ig"].scores, rtol=1e-5, atol=1e-5)


def test_hf_gradcam_equals_a_hand_wrapped_module(hf_vit_dir: Path) -> None:
    """Unwrapping ``.logits`` inside xai-bridge changes nothing against a user-written wrapper."""
    model = transformers.ViTForImageClassification.from_pretrained(hf_vit_dir)

    class Logits(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x).logits

    images = _images()
    pre = as_model(model).preprocess
    ours = xb.explain(model, images, "gradcam.GradCAM", targets=1)
    theirs = xb.explain(
        xb.TorchModel(Logits(model), pre), images, "gradcam.GradCAM", targets=1, layer="inner." + ours.params["layer"]
    )
    np.testing.assert_allclose(ours.attributions, theirs.attributions, rtol=1e-5, atol=1e-6)


def test_hf_convnext_shortest_edge_crop(hf_convnext_dir: Path) -> None:
    model = transformers.ConvNextForImageClassification.from_pretrained(hf_convnext_dir)
    pre = as_model(model).preprocess
    assert (pre.size, pre.resize, pre.interpolation, pre.crop_rounding) == ((32, 32), 36, "bicubic", "floor")
    images = _images((2, 41, 53, 3))  # odd margins: Hugging Face floors them
    pil = transformers.ConvNextImageProcessorPil.from_pretrained(hf_convnext_dir)(list(images), return_tensors="np")
    np.testing.assert_allclose(pre.apply(images), pil["pixel_values"], atol=1e-5)
    fast = transformers.AutoImageProcessor.from_pretrained(hf_convnext_dir)(list(images), return_tensors="pt")
    std = min(pre.std or (1.0,))
    assert np.abs(pre.apply(images) - fast["pixel_values"].numpy()).max() <= 1.05 / 255 / std
    assert np.abs(_torch_prepare(pre, images) - pil["pixel_values"]).max() <= 1.05 / 255 / std


def test_hf_convnext_three_methods_and_crop_alignment(hf_convnext_dir: Path) -> None:
    model = transformers.ConvNextForImageClassification.from_pretrained(hf_convnext_dir)
    images = _images((2, 48, 40, 3))  # resized to 43 x 36, crop 32 x 32 at (5, 2): rows 5.6..42.7, cols 2.2..37.8
    before = _snapshot(model)
    out = _three_methods(model, images, "sports car")
    _assert_unchanged(model, before)
    for exp in out.values():
        assert exp.target_names.tolist() == [["sports car"]] * 2
    cam = out["cam"]
    assert cam.params["layer"] == "convnext.encoder.stages.1"
    box = as_model(model).preprocess.crop_box(48, 40)
    np.testing.assert_allclose(box, (5 * 48 / 43, 2 * 40 / 36, 37 * 48 / 43, 34 * 40 / 36))
    outside = np.ones((48, 40), bool)
    outside[6:41, 2:38] = False
    assert np.all(cam.attributions[..., outside] == 0)  # the CAM covers the crop only
    assert np.abs(cam.attributions[..., ~outside]).max() > 0
    torchcam = xb.explain(model, images, "torchcam.GradCAM", targets="sports car")
    assert torchcam.params["layer"] == cam.params["layer"]
    assert np.all(torchcam.attributions[..., outside] == 0) and np.abs(torchcam.attributions).max() > 0
    ig = out["ig"]
    _check_ig(ig)
    assert np.all(ig.attributions[..., :4, :] == 0)  # rows the crop drops get no gradient
    assert np.abs(ig.attributions[..., 8:40, 4:36]).max() > 0


def test_hf_without_processor_file_names_the_fix(tmp_path: Path) -> None:
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    model = transformers.ResNetForImageClassification(config).eval()
    with pytest.raises(TypeError, match=r"preprocess=Preprocess.from_transformers\(processor\)"):
        xb.explain(model, _images(), "captum.Saliency")
    processor = transformers.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0)
    exp = xb.explain(model, _images(), "gradcam.GradCAM", preprocess=processor, targets="LABEL_2")
    assert exp.params["layer"] == "resnet.encoder.stages.1"
    assert exp.target_names.tolist() == [["LABEL_2"]] * 2
    same = xb.explain(
        model, _images(), "gradcam.GradCAM", preprocess=xb.Preprocess.from_transformers(processor), targets=2
    )
    np.testing.assert_array_equal(exp.attributions, same.attributions)


@pytest.mark.parametrize(
    ("name", "expected_layer", "prefix"),
    [("deit", "deit.layers.1.layernorm_before", 2), ("swin", "swin.layernorm", 0)],
)
def test_hf_transformer_cam_layers(name: str, expected_layer: str, prefix: int) -> None:
    torch.manual_seed(0)
    if name == "deit":
        config = transformers.DeiTConfig(**TINY_VISION, num_labels=3)
        model = transformers.DeiTForImageClassificationWithTeacher(config).eval()
    else:
        config = transformers.SwinConfig(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=3
        )
        model = transformers.SwinForImageClassification(config).eval()
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    exp = xb.explain(model, _images(), "gradcam.GradCAM", preprocess=processor, targets=0)
    assert exp.params["layer"] == expected_layer
    assert exp.params["reshape_transform"]["prefix_tokens"] == prefix
    assert np.abs(exp.attributions).max() > 0


# --------------------------------------------------------------------------- timm


@pytest.fixture(scope="module")
def timm_vit() -> nn.Module:
    torch.manual_seed(2)
    overlay = {
        "input_size": (3, 32, 32),
        "crop_pct": 0.8,
        "interpolation": "bicubic",
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
    }
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        pretrained_cfg_overlay=overlay,
    ).eval()


def test_timm_preprocessing_equals_create_transform(timm_vit: nn.Module) -> None:
    pre = as_model(timm_vit).preprocess
    assert (pre.size, pre.resize, pre.interpolation, pre.mean) == ((32, 32), 40, "bicubic", (0.5,) * 3)
    images = _images((2, 47, 61, 3))
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=timm_vit))
    ref = np.stack([transform(Image.fromarray(im)).numpy() for im in images])
    np.testing.assert_allclose(pre.apply(images), ref, atol=1e-5)
    assert np.abs(_torch_prepare(pre, images) - ref).max() <= LEVEL


def test_timm_three_methods_imagenet_names(timm_vit: nn.Module) -> None:
    assert timm_vit.num_classes == 1000
    images = _images()
    before = _snapshot(timm_vit)
    out = _three_methods(timm_vit, images, "tabby cat")
    _assert_unchanged(timm_vit, before)
    info = timm.data.ImageNetInfo()
    assert as_model(timm_vit).class_names[281] == info.index_to_description(281) == "tabby, tabby cat"
    for exp in out.values():
        assert exp.target_names.tolist() == [["tabby, tabby cat"]] * 2
    assert out["cam"].params["layer"] == "blocks.1.norm1"
    _check_ig(out["ig"])


def test_timm_swin_channels_last_norm() -> None:
    model = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        num_classes=3,
        img_size=32,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(2, 2),
        window_size=4,
    ).eval()
    pre = xb.Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    exp = xb.explain(model, _images(), "gradcam.GradCAM", preprocess=pre, targets=0)
    assert exp.params["layer"] == "norm"  # (N, 4, 4, C): channels last
    assert exp.params["reshape_transform"] == {"__type__": "ChannelsLast"}
    # the same layer by hand, permuted as pytorch-grad-cam users do
    hand = xb.explain(
        model,
        _images(),
        "gradcam.GradCAM",
        preprocess=pre,
        targets=0,
        target_layers=[model.norm],
        reshape_transform=lambda t: t.permute(0, 3, 1, 2),
    )
    np.testing.assert_allclose(exp.attributions, hand.attributions, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- torchvision


def test_torchvision_weights_enum() -> None:
    from torchvision.models import SqueezeNet1_1_Weights, squeezenet1_1

    weights = SqueezeNet1_1_Weights.IMAGENET1K_V1
    torch.manual_seed(3)
    model = squeezenet1_1(weights=None).eval()  # small, and its random outputs still depend on the image
    images = _images((1, 237, 251, 3))  # margins of 13 and 27 (rounded to 7 and 14 by torchvision)
    pre = xb.Preprocess.from_torchvision(weights)
    assert (pre.size, pre.resize, pre.interpolation, pre.crop_rounding) == ((224, 224), 256, "bilinear", "round")
    ref = np.stack([weights.transforms()(Image.fromarray(im)).numpy() for im in images])
    np.testing.assert_allclose(pre.apply(images), ref, atol=1e-5)
    std = min(pre.std or (1.0,))
    assert np.abs(_torch_prepare(pre, images) - ref).max() <= 1.05 / 255 / std
    with pytest.raises(TypeError, match="ResNet50_Weights"):
        xb.explain(model, images, "captum.Saliency")
    before = _snapshot(model)
    out = _three_methods(model, images, "tabby", n_steps=12, num_samples=12, preprocess=weights)  # 224 px inputs
    _assert_unchanged(model, before)
    for exp in out.values():
        assert exp.target_names.tolist() == [["tabby"]]
        assert exp.targets.tolist() == [[281]]
    _check_ig(out["ig"])
    assert out["cam"].params["layer"] == "classifier.1"  # the 1x1 conv giving class maps, before pooling


# --------------------------------------------------------------------------- spellings and preprocessing


def test_layer_aliases(tiny_model: xb.TorchModel, rgb_images: np.ndarray) -> None:
    layer = tiny_model.module.features[2]
    ref = xb.explain(tiny_model, rgb_images, "gradcam.GradCAM", targets=1, layer="features.2")
    alias = xb.explain(tiny_model, rgb_images, "gradcam.GradCAM", targets=1, target_layers=[layer])
    np.testing.assert_array_equal(ref.attributions, alias.attributions)
    assert alias.params["layer"] == "features.2" and "target_layers" not in alias.params
    tc = xb.explain(tiny_model, rgb_images, "torchcam.GradCAM", targets=1, target_layer="features.2")
    tc_ref = xb.explain(tiny_model, rgb_images, "torchcam.GradCAM", targets=1, layer=layer)
    np.testing.assert_array_equal(tc.attributions, tc_ref.attributions)
    with pytest.raises(ValueError, match="target_layers: expected one layer"):
        xb.explain(tiny_model, rgb_images, "gradcam.GradCAM", target_layers=[layer, layer])
    with pytest.raises(TypeError, match="target_layer: an alias of layer="):
        xb.explain(tiny_model, rgb_images, "torchcam.GradCAM", layer=layer, target_layer=layer)


def test_preprocess_resize_fields() -> None:
    plain = xb.Preprocess(size=(32, 32))
    assert plain.crop_box(40, 48) is None and plain.resized_size(40, 48) == (32, 32)
    pre = xb.Preprocess(size=(32, 32), resize=36)
    assert pre.resized_size(40, 48) == (36, 43) and pre.resized_size(48, 40) == (43, 36)
    assert pre.crop_offset(36, 43) == (2, 6)  # round(11 / 2) = 6 (banker's), as torchvision
    assert xb.Preprocess(size=(32, 32), resize=36, crop_rounding="floor").crop_offset(36, 43) == (2, 5)
    images = _images()
    resized = np.stack([np.asarray(Image.fromarray(im).resize((43, 36), Image.Resampling.BILINEAR)) for im in images])
    np.testing.assert_array_equal(pre.apply(images), xb.Preprocess().apply(resized[:, 2:34, 6:38]))
    for bad, match in [
        ({"resize": 36}, "needs size"),
        ({"size": (32, 32), "resize": 30}, "shorter edge 30"),
        ({"size": (32, 32), "resize": (40, 20)}, "resize"),
        ({"size": (32, 32), "interpolation": "lanczos"}, "interpolation"),
        ({"crop_rounding": "up"}, "crop_rounding"),
    ]:
        with pytest.raises(ValueError, match=match):
            xb.Preprocess(**bad)


def test_unsupported_processor_settings_name_the_fix() -> None:
    with pytest.raises(ValueError, match="resample='lanczos'"):
        xb.Preprocess.from_transformers({"size": {"height": 8, "width": 8}, "resample": 1})
    with pytest.raises(ValueError, match="depends on the image"):
        xb.Preprocess.from_transformers({"size": {"shortest_edge": 8}})
    with pytest.raises(TypeError, match="preprocess: expected a Preprocess"):
        as_model(nn.Linear(2, 2), preprocess=42)
