"""Transformer-native methods: builtin.AttentionRollout, builtin.LeGrad, builtin.GenericAttention.

Tiny models from configs, nothing downloaded: a timm ViT (with and without
register tokens), a torchvision ViT, a Hugging Face ViT saved and loaded back,
a Hugging Face CLIP and an open_clip model through ``ZeroShotModel``, a timm
Swin (refused: windowed attention). Parity: rollout against a hand-written
rollout (HF, timm), LeGrad against torchcam's on torchvision's ViT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

import test_zero_shot as zero_shot  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from conftest import make_tiny_net  # noqa: E402
from helpers import module_state  # noqa: E402
from hf_tiny import TINY_VISION, tiny_text_config, write_clip_vocab  # noqa: E402

import xai_bridge as xb  # noqa: E402

# the tiny CLIP and open_clip fixtures of test_zero_shot.py (built from configs, nothing downloaded)
PROMPTS = zero_shot.PROMPTS
clip_dir, clip = zero_shot.clip_dir, zero_shot.clip
open_clip_dir, open_clip_model = zero_shot.open_clip_dir, zero_shot.open_clip_model

METHODS = ("builtin.AttentionRollout", "builtin.LeGrad", "builtin.GenericAttention")
PRE = xb.Preprocess(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _pixels(images: np.ndarray) -> torch.Tensor:
    """The models' input for ``images``, as ``PRE`` declares it."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25


def _up(grid: torch.Tensor) -> np.ndarray:
    """``(N, h, w)`` -> ``(N, 32, 32)`` as the methods upsample."""
    return F.interpolate(grid[:, None].float(), size=(32, 32), mode="bilinear", align_corners=False)[:, 0].numpy()


def _rollout(attentions: list[torch.Tensor], prefix: int = 1) -> torch.Tensor:
    """Abnar & Zuidema's rollout written out: mean over heads, + I, rows renormalised, multiplied; CLS row."""
    result = None
    for attention in attentions:
        a = attention.double().mean(dim=1)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    assert result is not None
    side = round((result.shape[-1] - prefix) ** 0.5)
    return result[:, 0, prefix:].reshape(len(result), side, side)


def _timm_vit(**kwargs: Any) -> Any:
    torch.manual_seed(0)
    net = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=5, **kwargs
    )
    return net.eval()


def _torchvision_vit() -> Any:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    net.heads = torch.nn.Sequential(torch.nn.Linear(32, 5))  # torchvision zero-initialises its head
    return net.eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import ViTConfig, ViTForImageClassification

    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    config = ViTConfig(**TINY_VISION)
    config.num_labels = 5
    ViTForImageClassification(config).save_pretrained(folder)
    return folder


def _model(net: Any) -> xb.TorchModel:
    return xb.TorchModel(net, PRE, batch_size=8, tune_batch=False)


def test_rollout_equals_a_hand_written_rollout_on_a_hugging_face_vit(hf_dir: Path) -> None:
    from transformers import ViTForImageClassification

    images = _images(3)
    exp = xb.explain(_model(ViTForImageClassification.from_pretrained(hf_dir).eval()), images, METHODS[0])
    eager = ViTForImageClassification.from_pretrained(hf_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        attentions = eager(pixel_values=_pixels(images), output_attentions=True).attentions
    expected = _up(_rollout(list(attentions)))
    np.testing.assert_allclose(exp.attributions[:, 0], expected, rtol=0, atol=1e-6)
    assert exp.attributions.shape == (3, 1, 32, 32) and exp.attributions.min() >= 0


def test_rollout_equals_a_hand_written_rollout_on_a_timm_vit() -> None:
    net, images = _timm_vit(), _images(3)
    inputs: list[torch.Tensor] = []
    handles = [b.attn.register_forward_hook(lambda _m, i, _o: inputs.append(i[0])) for b in net.blocks]
    with torch.no_grad():
        net(_pixels(images))
    for handle in handles:
        handle.remove()
    attentions = []
    for block, x in zip(net.blocks, inputs, strict=True):
        attn = block.attn
        qkv = attn.qkv(x).reshape(len(x), x.shape[1], 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        attentions.append(((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1).detach())
    exp = xb.explain(_model(net), images, METHODS[0], targets=[[0, 1]] * 3)
    expected = _up(_rollout(attentions))
    for j in range(2):  # target-independent
        np.testing.assert_allclose(exp.attributions[:, j], expected, rtol=0, atol=1e-6)


def test_generic_attention_equals_the_authors_rule_written_out(hf_dir: Path) -> None:
    """Chefer et al.'s ViT code: R = I; R += mean_h((grad * A)^+) R per layer; the class token's row over patches."""
    from transformers import ViTForImageClassification

    images = _images(2)
    exp = xb.explain(
        _model(ViTForImageClassification.from_pretrained(hf_dir).eval()), images, METHODS[2], targets=[3, 1]
    )
    eager = ViTForImageClassification.from_pretrained(hf_dir, attn_implementation="eager").eval()
    out = eager(pixel_values=_pixels(images), output_attentions=True)
    for attention in out.attentions:
        attention.retain_grad()
    out.logits[[0, 1], [3, 1]].sum().backward()
    relevance = torch.eye(17, dtype=torch.float64).repeat(2, 1, 1)
    for attention in out.attentions:
        cam = (attention.grad * attention).clamp(min=0).mean(dim=1).double()
        relevance = relevance + cam @ relevance
    expected = _up(relevance[:, 0, 1:].reshape(2, 4, 4).detach())
    np.testing.assert_allclose(exp.attributions[:, 0], expected, rtol=1e-5, atol=1e-8)


def test_legrad_equals_torchcams_legrad_on_a_torchvision_vit() -> None:
    pytest.importorskip("torchcam")
    from helpers import assert_close
    from torchcam.methods import LeGrad

    net, images = _torchvision_vit(), _images(3)
    exp = xb.explain(_model(net), images, METHODS[1], targets=[[1, 4], [0, 2], [3, 3]])
    with LeGrad(net, list(net.encoder.layers)) as extractor:
        expected = []
        for j in range(2):
            scores = net(_pixels(images))
            idx = [int(t) for t in exp.targets[:, j]]
            expected.append(_up(extractor(idx, scores, normalized=False)[0].detach()))
    assert_close(exp.attributions, np.stack(expected, axis=1), rel=1e-5)
    assert exp.attributions.max() > 0


def test_legrads_own_code_equals_torchcams_with_the_models_own_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code used off torchvision: each layer's tokens through the model's tail (final norm, CLS, head)."""
    pytest.importorskip("torchcam")
    from helpers import assert_close
    from torchcam.methods import LeGrad
    from xai_bridge.adapters.methods.builtin import _attention as attention

    monkeypatch.setattr(attention, "_is_torchvision_vit", lambda _module: False)
    net, images = _torchvision_vit(), _images(3)
    exp = xb.explain(_model(net), images, METHODS[1], targets=[[1, 4], [0, 2], [3, 3]])
    tail = lambda tokens: net.heads(net.encoder.ln(tokens)[:, 0])  # noqa: E731
    with LeGrad(net, list(net.encoder.layers), score_projection=tail) as extractor:
        expected = []
        for j in range(2):
            scores = net(_pixels(images))
            idx = [int(t) for t in exp.targets[:, j]]
            expected.append(_up(extractor(idx, scores, normalized=False)[0].detach()))
    assert_close(exp.attributions, np.stack(expected, axis=1), rel=1e-5)  # torchcam's own head (mean) would differ


@pytest.mark.parametrize("method", METHODS)
def test_methods_run_on_a_timm_vit_with_registers(method: str) -> None:
    net = _timm_vit(reg_tokens=4)
    assert net.num_prefix_tokens == 5
    exp = xb.explain(_model(net), _images(), method, targets=[[1, 2], [0, 3]])
    assert exp.attributions.shape == (2, 2, 32, 32) and exp.attributions.min() >= 0 and exp.attributions.max() > 0


@pytest.mark.parametrize("method", METHODS)
def test_methods_run_on_a_tiny_clip_through_zero_shot_model(method: str, clip: tuple[Any, Any]) -> None:
    model, processor = clip
    zs = xb.ZeroShotModel(model, PROMPTS, processor=processor, batch_size=8, tune_batch=False)
    before = module_state(model)
    exp = xb.explain(zs, _images(), method, targets=[[0, 1], [2, 0]])
    assert exp.attributions.shape == (2, 2, 32, 32) and exp.attributions.min() >= 0 and exp.attributions.max() > 0
    assert module_state(model) == before
    assert model.config.vision_config._attn_implementation == "sdpa"


@pytest.mark.parametrize("method", METHODS)
def test_methods_run_on_open_clip_through_zero_shot_model(method: str, open_clip_model: tuple[Any, Any, Any]) -> None:
    model, preprocess, tokenizer = open_clip_model
    zs = xb.ZeroShotModel(model, PROMPTS, processor=preprocess, tokenizer=tokenizer)
    exp = xb.explain(zs, _images(), method, targets=[[0, 1], [2, 0]])
    assert exp.attributions.shape == (2, 2, 32, 32) and exp.attributions.min() >= 0 and exp.attributions.max() > 0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["deit", "beit"])
def test_methods_run_on_hugging_face_deit_and_beit(method: str, kind: str) -> None:
    """DeiT has a distillation token after the class token; BEiT a relative position bias and mean pooling."""
    from transformers import BeitConfig, BeitForImageClassification, DeiTConfig, DeiTForImageClassificationWithTeacher

    torch.manual_seed(0)
    if kind == "deit":
        net = DeiTForImageClassificationWithTeacher(DeiTConfig(**TINY_VISION, num_labels=5))
    else:
        config = BeitConfig(**TINY_VISION, num_labels=5, use_relative_position_bias=True)
        net = BeitForImageClassification(config)
    exp = xb.explain(_model(net.eval()), _images(), method, targets=[[1, 2], [0, 3]])
    assert exp.attributions.min() >= 0 and exp.attributions.max() > 0


@pytest.mark.parametrize("method", METHODS)
def test_methods_run_on_a_tiny_siglip_without_class_token(method: str, tmp_path: Path) -> None:
    """SigLIP pools with an attention head (cross-attention from one probe: not a site) and has no class token."""
    from transformers import CLIPTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

    tok = CLIPTokenizer(*map(str, write_clip_vocab(tmp_path)))
    torch.manual_seed(0)
    config = SiglipConfig(text_config=tiny_text_config(tok), vision_config=TINY_VISION)
    model = SiglipModel(config).eval()
    zs = xb.ZeroShotModel(
        model, PROMPTS, tokenizer=tok, image_processor=SiglipImageProcessor(size={"height": 32, "width": 32})
    )
    exp = xb.explain(zs, _images(), method, targets=[[0, 1], [2, 0]])
    assert exp.attributions.min() >= 0 and exp.attributions.max() > 0
    assert exp.attributions.max() > exp.attributions.min()


@pytest.mark.parametrize("method", METHODS)
def test_swin_is_refused_in_one_line(method: str) -> None:
    torch.manual_seed(0)
    swin = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=32,
        window_size=4,
        depths=(1, 1),
        num_heads=(1, 2),
        embed_dim=16,
        num_classes=5,
    ).eval()
    with pytest.raises(xb.MethodNotApplicableError, match=r"windowed attention, as in Swin\); use gradcam.GradCAM$"):
        xb.explain(_model(swin), _images(), method)


@pytest.mark.parametrize("method", METHODS)
def test_a_cnn_is_refused_in_one_line(method: str) -> None:
    with pytest.raises(
        xb.MethodNotApplicableError,
        match=r"needs a transformer with attention modules; got TinyNet.*use gradcam.GradCAM",
    ) as info:
        xb.explain(_model(make_tiny_net(0)), _images(), method)
    assert "\n" not in str(info.value)


def test_bad_parameters_are_refused_in_one_line() -> None:
    model = _model(_timm_vit())
    with pytest.raises(xb.ParameterError, match="head_fusion: expected one of"):
        xb.explain(model, _images(), METHODS[0], head_fusion="median")
    with pytest.raises(xb.ParameterError, match=r"layer: expected an attention module .* got 'head'"):
        xb.explain(model, _images(), METHODS[1], layer="head")
    with pytest.raises(xb.ParameterError, match="layer: expected at least one"):
        xb.explain(model, _images(), METHODS[2], layer=[])


def test_layer_chooses_the_attention_layers() -> None:
    net, images = _timm_vit(), _images()
    model = _model(net)
    by_block = xb.explain(model, images, METHODS[2], layer="blocks.1")
    by_module = xb.explain(model, images, METHODS[2], layer=[net.blocks[1].attn])
    every = xb.explain(model, images, METHODS[2])
    np.testing.assert_array_equal(by_block.attributions, by_module.attributions)
    assert not np.allclose(by_block.attributions, every.attributions)
    assert by_block.params["layer"] == "blocks.1"


def test_the_attention_modules_are_found_once_per_input_size() -> None:
    net = _timm_vit()
    model, images = _model(net), _images()
    first, second = (xb.explain(model, images, METHODS[0], targets=[[1], [2]]) for _ in range(2))
    assert first.n_model_evals - second.n_model_evals == 1  # the tracing forward pass of one image
    np.testing.assert_array_equal(first.attributions, second.attributions)
    net.blocks[1].attn = type(net.blocks[1].attn)(192, num_heads=3, qkv_bias=True).eval()  # a swapped module
    third = xb.explain(model, images, METHODS[0], targets=[[1], [2]])
    assert third.n_model_evals == first.n_model_evals and not np.allclose(third.attributions, first.attributions)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["timm", "torchvision", "hf"])
def test_the_model_ends_exactly_as_it_was(method: str, kind: str, hf_dir: Path) -> None:
    from transformers import ViTForImageClassification

    nets = {"timm": _timm_vit, "torchvision": _torchvision_vit}
    net = nets[kind]() if kind in nets else ViTForImageClassification.from_pretrained(hf_dir).eval()
    model, images = _model(net), _images()
    flags = [(n, m.__dict__.get("fused_attn")) for n, m in net.named_modules()]
    configs = [(n, m.config._attn_implementation) for n, m in net.named_modules() if hasattr(m, "config")]
    before, pixels, outputs = module_state(net), images.copy(), model.predict(images)
    xb.explain(model, images, method, targets=[[1, 2], [0, 3]])
    assert module_state(net) == before and np.array_equal(images, pixels)
    assert [(n, m.__dict__.get("fused_attn")) for n, m in net.named_modules()] == flags
    assert [(n, m.config._attn_implementation) for n, m in net.named_modules() if hasattr(m, "config")] == configs
    np.testing.assert_array_equal(model.predict(images), outputs)


def _signal_data(n: int, seed: int, train: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grey noise images, most with one bright 8x8 patch on the 4x4 patch grid.

    The class is the patch's colour: red 0, blue 1, and 2 for no patch, so that
    each colour is evidence of its own class (with two classes a model may
    learn one colour and call its absence the other).
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 120, size=(n, 32, 32, 3)).astype(np.uint8)
    labels = rng.integers(0, 3 if train else 2, size=n)
    cells = rng.integers(0, 4, size=(n, 2))
    for i, ((r, c), label) in enumerate(zip(cells, labels, strict=True)):
        if label < 2:
            images[i, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = (250, 40, 40) if label == 0 else (40, 40, 250)
    return images, labels, cells


@pytest.fixture(scope="module")
def trained_vit() -> Any:
    return _train_vit()


def _train_vit(steps: int = 60) -> Any:
    """A 2-layer timm ViT trained for a few seconds to tell the patch colour (or its absence)."""
    torch.manual_seed(0)
    net = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=32,
        num_heads=2,
        num_classes=3,
    )
    images, labels, _ = _signal_data(384, 0, train=True)
    x, y = _pixels(images), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
    net.train()
    for step in range(steps):
        batch = torch.randint(0, len(x), (32,), generator=torch.Generator().manual_seed(step))
        loss = F.cross_entropy(net(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


@pytest.mark.parametrize("method", METHODS)
def test_maps_find_the_patch_that_decides_the_class(method: str, trained_vit: Any) -> None:
    images, labels, cells = _signal_data(16, 1)
    model = _model(trained_vit)
    assert (model.predict(images).argmax(1) == labels).mean() >= 0.9
    maps = xb.explain(model, images, method, targets=labels[:, None].tolist()).attributions[:, 0]
    inside = np.array(
        [m[8 * r : 8 * r + 8, 8 * c : 8 * c + 8].sum() / m.sum() for m, (r, c) in zip(maps, cells, strict=True)]
    )
    # chance: 1 / 16 of the image. Measured: rollout ~0.45, GenericAttention ~0.66, LeGrad ~0.12 (0.2 on blue
    # patches, 0.03 on red ones: this model's score for red is not sensitive to attention on the red patch)
    assert inside.mean() > 1.5 / 16, inside
