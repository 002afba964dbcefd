"""ZeroShotModel: CLIP-style image-text models as classifiers over prompts.

Tiny models built from configs (no downloads): a Hugging Face CLIPModel and
SiglipModel with a CLIP tokenizer written from a seven-word vocabulary, and an
open_clip model from a local-dir config without weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpers import REPO  # noqa: E402
from hf_tiny import TINY_VISION, tiny_text_config, write_clip_vocab  # noqa: E402
from PIL import Image  # noqa: E402
from xai_bridge.adapters._torch import hook_count  # noqa: E402
from xai_bridge.adapters.models.zero_shot import preprocess_from_processor  # noqa: E402

import xai_bridge as xb  # noqa: E402

PROMPTS = ["a photo of a cat", "a photo of a dog", "a photo of a car"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIPModel + CLIPProcessor saved with save_pretrained (seeded)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip")
    tok = CLIPTokenizer(*map(str, write_clip_vocab(folder)))
    torch.manual_seed(0)
    config = CLIPConfig(text_config=tiny_text_config(tok), vision_config=TINY_VISION, projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(folder)
    return folder


@pytest.fixture
def clip(clip_dir: Path) -> tuple[Any, Any]:
    from transformers import CLIPModel, CLIPProcessor

    return CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)


@pytest.fixture
def zs(clip: tuple[Any, Any]) -> xb.ZeroShotModel:
    model, processor = clip
    return xb.ZeroShotModel(model, PROMPTS, processor=processor, batch_size=8, tune_batch=False)


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("open_clip")
    config = {
        "model_cfg": {
            "embed_dim": 16,
            "vision_cfg": {
                "image_size": 32,
                "layers": 2,
                "width": 32,
                "head_width": 16,
                "patch_size": 8,
                "mlp_ratio": 2,
            },
            "text_cfg": {
                "context_length": 16,
                "vocab_size": 49408,
                "width": 32,
                "heads": 2,
                "layers": 2,
                "mlp_ratio": 2,
            },
        },
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def open_clip_model(open_clip_dir: Path) -> tuple[Any, Any, Any]:
    """(model, eval preprocess transform, tokenizer): random weights, nothing downloaded."""
    import open_clip

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{open_clip_dir}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{open_clip_dir}")


def _image(seed: int, h: int = 32, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _state(model: Any) -> tuple[Any, ...]:
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad is None for p in model.parameters()],
        hook_count(model),
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def _same_state(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[:4] == b[:4] and a[4].keys() == b[4].keys() and all(torch.equal(a[4][k], b[4][k]) for k in a[4])


# ---------------------------------------------------------------------------------------------- outputs and parity


def test_outputs_equal_logits_per_image(clip, zs) -> None:
    model, processor = clip
    image = _image(0)
    with torch.no_grad():
        ref = model(**processor(text=PROMPTS, images=image, return_tensors="pt", padding=True)).logits_per_image
    out = zs.predict(image[None])
    assert out.shape == (1, 3) and zs.class_names == PROMPTS and zs.output_kind == xb.OutputKind.LOGITS
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5, rtol=0)


def test_processor_resize_and_crop_are_applied(clip, zs) -> None:
    """A 40x52 image: shortest edge to 32 (bicubic), centre crop 32x32, as CLIPImageProcessor does."""
    model, processor = clip
    assert zs.preprocess.resize == 32 and zs.preprocess.size == (32, 32)
    assert zs.preprocess.interpolation == "bicubic" and zs.preprocess.mean == tuple(
        processor.image_processor.image_mean
    )
    image = _image(1, 40, 52)
    with torch.no_grad():
        ref = model(**processor(text=PROMPTS, images=image, return_tensors="pt", padding=True)).logits_per_image
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    # the processor rounds its resized image to uint8, xai-bridge keeps it float (differentiable): close, not equal
    np.testing.assert_allclose(zs.predict(image[None]), ref.numpy(), atol=0.02)
    ours = zs.preprocess.apply(image[None])  # the numpy path (Pillow), as array models would see it
    assert ours.shape == tuple(pixels.shape)
    assert np.abs(ours - pixels.numpy()).mean() < 0.02


def test_text_embeddings_equal_get_text_features(clip, zs) -> None:
    model, processor = clip
    with torch.no_grad():
        out = model.get_text_features(**processor.tokenizer(PROMPTS, padding=True, return_tensors="pt"))
    feats = out if isinstance(out, torch.Tensor) else out.pooler_output
    feats = feats / feats.norm(dim=-1, keepdim=True)
    assert zs.text_embeddings.shape == (3, 16) and not zs.text_embeddings.requires_grad
    torch.testing.assert_close(zs.text_embeddings, feats, atol=1e-6, rtol=0)


def test_siglip_logit_bias_and_max_length_padding(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

    tok = CLIPTokenizer(*map(str, write_clip_vocab(tmp_path)))
    torch.manual_seed(1)
    model = SiglipModel(SiglipConfig(text_config=tiny_text_config(tok), vision_config=TINY_VISION)).eval()
    with torch.no_grad():
        model.logit_bias.fill_(-1.5)
    ip = SiglipImageProcessor(size={"height": 32, "width": 32})
    zs = xb.ZeroShotModel(model, PROMPTS, tokenizer=tok, image_processor=ip)
    assert zs.preprocess.size == (32, 32) and zs.preprocess.resize is None
    assert zs.output_kind == xb.OutputKind.SCORES  # a sigmoid per prompt, not a softmax over them
    image = _image(2)
    tokens = tok(PROMPTS, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        ref = model(**tokens, pixel_values=ip(images=image, return_tensors="pt")["pixel_values"]).logits_per_image
    np.testing.assert_allclose(zs.predict(image[None]), ref.numpy(), atol=1e-5, rtol=0)
    with torch.no_grad():  # the bias is read at each call: without it every output moves by exactly 1.5
        model.logit_bias.zero_()
        shifted = zs.predict(image[None])
    np.testing.assert_allclose(shifted - 1.5, ref.numpy(), atol=1e-5, rtol=0)
    stretched = _image(3, 40, 52)  # no crop: stretched to 32x32
    with torch.no_grad():
        model.logit_bias.fill_(-1.5)
        ref = model(**tokens, pixel_values=ip(images=stretched, return_tensors="pt")["pixel_values"]).logits_per_image
    np.testing.assert_allclose(zs.predict(stretched[None]), ref.numpy(), atol=0.02)


def test_open_clip_outputs_equal_get_logits(open_clip_model) -> None:
    model, preprocess, tokenizer = open_clip_model
    zs = xb.ZeroShotModel(model, PROMPTS, processor=preprocess, tokenizer=tokenizer)
    image = _image(3)
    with torch.no_grad():
        ref, _ = model.get_logits(preprocess(Image.fromarray(image))[None], tokenizer(PROMPTS))
    np.testing.assert_allclose(zs.predict(image[None]), ref.numpy(), atol=1e-5, rtol=0)
    # the transform and the model's own preprocess_cfg describe the same steps
    assert preprocess_from_processor(preprocess) == preprocess_from_processor(model.visual.preprocess_cfg)
    assert zs.preprocess == xb.ZeroShotModel(model, PROMPTS, tokenizer=tokenizer).preprocess
    big = _image(4, 44, 36)
    with torch.no_grad():
        ref, _ = model.get_logits(preprocess(Image.fromarray(big))[None], tokenizer(PROMPTS))
    np.testing.assert_allclose(zs.predict(big[None]), ref.numpy(), atol=0.02)


# ---------------------------------------------------------------------------------------------- methods


def test_integrated_gradients_completeness(zs) -> None:
    image = _image(5, 40, 48)
    exp = xb.explain(zs, image, "captum.IntegratedGradients", targets=1, baselines=0, n_steps=64)
    gap = zs.predict(image[None])[0, 1] - zs.predict(np.zeros_like(image)[None])[0, 1]
    total = float(exp.attributions.sum())
    assert abs(gap) > 0.05  # a gap worth checking against
    assert abs(total - gap) <= 0.05 * abs(gap), (total, gap)


@pytest.mark.parametrize("method", ["gradcam.GradCAM", "torchcam.GradCAM"])
def test_cam_on_vision_token_grid(zs, method) -> None:
    images = np.stack([_image(6, 40, 48), _image(7, 40, 48)])
    exp = xb.explain(zs, images, method, targets=[0, 2])
    maps = exp.attributions
    assert maps.shape == (2, 1, 40, 48) and np.isfinite(maps).all() and np.abs(maps).max() > 0
    # the last encoder layer's attention input: its patch tokens are what the class token reads
    assert exp.params["layer"] == "vision_model.encoder.layers.1.layer_norm1"


def test_cam_open_clip_token_grid(open_clip_model) -> None:
    model, preprocess, tokenizer = open_clip_model
    zs = xb.ZeroShotModel(model, PROMPTS, processor=preprocess, tokenizer=tokenizer)
    exp = xb.explain(zs, _image(8, 36, 36), "gradcam.GradCAM", targets="a photo of a car")
    assert exp.attributions.shape == (1, 1, 36, 36) and np.isfinite(exp.attributions).all()
    assert np.abs(exp.attributions).max() > 0 and exp.params["layer"] == "visual.transformer.resblocks.1.ln_1"


def test_cam_explicit_layer_and_text_layer_refused(zs) -> None:
    image = _image(9, 32, 32)
    exp = xb.explain(zs, image, "gradcam.GradCAM", targets=0, layer="vision_model.encoder.layers.0.layer_norm2")
    assert exp.attributions.shape == (1, 1, 32, 32) and np.isfinite(exp.attributions).all()
    with pytest.raises(ValueError, match="did not run in the forward pass"):
        xb.explain(zs, image, "gradcam.GradCAM", targets=0, layer="text_model.encoder.layers.0.layer_norm1")


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("lime", {"num_samples": 64}),
        ("shap.partition", {"max_evals": 64}),
        ("rise", {"n_masks": 64}),
        ("builtin.occlusion", {}),
    ],
)
def test_perturbation_methods(zs, method, params) -> None:
    image = _image(10, 40, 48)
    exp = xb.explain(zs, image, method, targets="a photo of a dog", seed=0, **params)
    assert exp.attributions.shape[0] == 1 and exp.attributions.shape[-2:] == (40, 48)
    assert np.isfinite(exp.attributions).all() and np.abs(exp.attributions).max() > 0
    np.testing.assert_allclose(exp.scores[0, 0], zs.predict(image[None])[0, 1], atol=1e-5)


def test_prompt_target_selects_that_prompt(zs) -> None:
    image = _image(11, 40, 48)
    by_name = xb.explain(zs, image, "captum.Saliency", targets="a photo of a car")
    by_index = xb.explain(zs, image, "captum.Saliency", targets=2)
    assert by_name.targets.tolist() == [[2]] and by_name.target_names.tolist() == [["a photo of a car"]]
    np.testing.assert_array_equal(by_name.attributions, by_index.attributions)
    other = xb.explain(zs, image, "captum.Saliency", targets="a photo of a cat")
    assert not np.allclose(other.attributions, by_name.attributions)
    with pytest.raises(ValueError, match="a photo of a car"):
        xb.explain(zs, image, "captum.Saliency", targets="a photo of a cra")


# ---------------------------------------------------------------------------------------------- text once, user's model


def test_text_tower_runs_once(clip) -> None:
    model, processor = clip
    calls = []
    handle = model.text_model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        zs = xb.ZeroShotModel(model, PROMPTS, processor=processor)
        assert len(calls) == 1
        image = _image(12, 40, 48)
        xb.explain(zs, image, "gradcam.GradCAM", targets="a photo of a cat")
        xb.explain(zs, image, "lime", targets="a photo of a dog", num_samples=16)
        assert len(calls) == 1
    finally:
        handle.remove()


def test_open_clip_text_tower_runs_once(open_clip_model) -> None:
    model, preprocess, tokenizer = open_clip_model
    calls = []
    handle = model.transformer.register_forward_pre_hook(lambda *_: calls.append(1))  # the text transformer
    try:
        zs = xb.ZeroShotModel(model, PROMPTS, processor=preprocess, tokenizer=tokenizer)
        xb.explain(zs, _image(13), "captum.Saliency", targets=0)
        xb.explain(zs, _image(13), "rise", targets=1, n_masks=16)
        assert len(calls) == 1
    finally:
        handle.remove()


def test_users_model_unchanged(clip) -> None:
    model, processor = clip
    model.train()
    model.vision_model.embeddings.patch_embedding.weight.requires_grad_(False)
    handle = model.vision_model.post_layernorm.register_forward_hook(lambda *_: None)
    try:
        before = _state(model)
        zs = xb.ZeroShotModel(model, PROMPTS, processor=processor)
        assert _same_state(before, _state(model))
        image = _image(14, 40, 48)
        for method, params in [
            ("gradcam.GradCAM", {}),
            ("captum.IntegratedGradients", {"n_steps": 8}),
            ("lime", {"num_samples": 16}),
        ]:
            xb.explain(zs, image, method, targets=1, **params)
            assert _same_state(before, _state(model)), method
        assert model.training and zs.module is model
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_raises_one_clear_error(clip) -> None:
    model, processor = clip
    with pytest.raises(xb.ModelInputError, match=r"prompts: .*wrap it"):
        xb.ZeroShotModel(model, "a photo of a cat", processor=processor)
    with pytest.raises(xb.ModelInputError, match="distinct"):
        xb.ZeroShotModel(model, ["a cat", "a cat"], processor=processor)
    with pytest.raises(xb.ModelInputError, match="model: expected an image-text model"):
        xb.ZeroShotModel(torch.nn.Linear(2, 2), PROMPTS, processor=processor)
    with pytest.raises(xb.ModelInputError, match="tokenizer: "):
        xb.ZeroShotModel(model, PROMPTS, image_processor=processor.image_processor)
    with pytest.raises(xb.ModelInputError, match="processor: "):
        xb.ZeroShotModel(model, PROMPTS, tokenizer=processor.tokenizer)


# ---------------------------------------------------------------------------------------------- Preprocess fields


def test_preprocess_shortest_edge_crop_numpy_and_torch_agree(zs) -> None:
    """The declared steps give the same pixels on the numpy (Pillow) and torch paths."""
    pre = xb.Preprocess(
        size=(24, 24), resize=28, interpolation="bicubic", crop_rounding="floor", mean=(0.5,) * 3, std=(0.2,) * 3
    )
    assert pre.resized_size(40, 60) == (28, 42) and pre.crop_offset(28, 42) == (2, 9)
    image = _image(15, 40, 60)[None]
    from xai_bridge.adapters.models import PixelModule

    net = PixelModule(torch.nn.Identity(), pre)
    with torch.no_grad():
        ours = net(torch.from_numpy(image).permute(0, 3, 1, 2).float()).numpy()
    ref = pre.apply(image)
    assert ours.shape == ref.shape == (1, 3, 24, 24)
    assert np.abs(ours - ref).mean() < 0.01  # Pillow rounds to uint8 after resizing
    # an odd margin: Hugging Face floors it, torchvision's CenterCrop (open_clip, timm) rounds it
    assert pre.crop_offset(31, 24) == (3, 0)
    assert xb.Preprocess(size=(24, 24), resize=24, crop_rounding="round").crop_offset(31, 24) == (4, 0)
    with pytest.raises(ValueError, match="crop_rounding"):
        xb.Preprocess(crop_rounding="ceil")
    with pytest.raises(ValueError, match="interpolation"):
        xb.Preprocess(interpolation="lanczos")


# ---------------------------------------------------------------------------------------------- example


def test_example_runs_on_a_local_folder(clip_dir: Path, tmp_path: Path) -> None:
    import importlib.util

    path = REPO / "examples" / "zero_shot_clip.py"
    spec = importlib.util.spec_from_file_location("zero_shot_clip", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    Image.fromarray(_image(16, 40, 48)).save(tmp_path / "in.png")
    results = module.main(
        [str(clip_dir), str(tmp_path / "in.png"), "--prompts", *PROMPTS, "--out", str(tmp_path / "out"), "--quick"]
    )
    assert set(results) == {"gradcam.GradCAM", "captum.IntegratedGradients", "lime"}
    for name, exp in results.items():
        assert exp.attributions.shape[-2:] == (40, 48)
        assert (tmp_path / "out" / f"{name}.png").is_file()


def test_semantic_regions_for_a_prompt(zs) -> None:
    """shap Partition over semantic regions explains a zero-shot prompt like any classifier (Owen efficiency)."""
    image = np.kron(_image(12, 4, 4), np.ones((10, 12, 1), np.uint8))  # 40x48 of flat 10x12 blocks
    exp = xb.explain(
        zs,
        image,
        "shap.Partition",
        targets="a photo of a dog",
        max_evals=40,
        masker="blur(8,8)",
        partition=image[..., 0],
    )
    segments = exp.extras["segments"][0, 0]
    assert len(np.unique(segments)) >= 2
    np.testing.assert_allclose(exp.attributions[0, 0].sum(), exp.scores[0, 0] - exp.base_scores[0, 0], atol=1e-4)
