"""shap.Partition and shap.Gradient: parity with shap called directly, efficiency, state, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_close, random_images
from torch import nn
from xai_bridge.adapters.models import BlackBoxModel, TorchModel, hook_count

import xai_bridge as xb
from xai_bridge.explanation import jsonable
from xai_bridge.options import ImageMasker, MaskKind

shap = pytest.importorskip("shap")
pytest.importorskip("cv2")


def _to_uint8_predict(model):
    """The function a user would hand shap: float HWC in [0, 255] -> the model on uint8."""
    return lambda x: model.predict(np.clip(np.rint(x), 0, 255).astype(np.uint8))


@pytest.fixture
def small_images(rgb_images) -> np.ndarray:
    return np.ascontiguousarray(rgb_images[:, :24, :24])


@pytest.mark.parametrize(
    ("fixed_context", "masker", "shap_mask_value"),
    [
        (None, "inpaint_telea", "inpaint_telea"),
        (1, "inpaint_telea", "inpaint_telea"),
        (None, "blur(5,7)", "blur(5,7)"),  # these two take xai-bridge's uint8 masking path
        (None, xb.ImageMasker(xb.MaskKind.CONSTANT, value=(20.0, 127.6, 250.0)), None),
    ],
)
def test_partition_matches_shap_called_directly(
    tiny_model, small_images, fixed_context, masker, shap_mask_value
) -> None:
    exp = xb.explain(
        tiny_model,
        small_images,
        "shap.Partition",
        targets=[[1, 3], [1, 3]],
        seed=7,
        masker=masker,
        max_evals=80,
        batch_size=20,
        fixed_context=fixed_context,
    )
    if shap_mask_value is None:
        shap_mask_value = np.broadcast_to(np.array([20.0, 127.6, 250.0]), (24, 24, 3)).copy()
    explainer = shap.explainers.Partition(
        _to_uint8_predict(tiny_model), shap.maskers.Image(shap_mask_value, (24, 24, 3))
    )
    np.random.seed(7)  # shap breaks priority ties with numpy's global RNG
    ref = explainer(
        small_images.astype(np.float64),
        max_evals=80,
        batch_size=20,
        outputs=np.array([1, 3]),
        fixed_context=fixed_context,
        silent=True,
    )
    assert exp.raw.shape == (2, 2, 3, 24, 24)
    assert_close(exp.raw, np.transpose(ref.values, (0, 4, 3, 1, 2)))
    assert np.allclose(exp.attributions, exp.raw.sum(axis=2))
    assert np.allclose(exp.base_scores, ref.base_values, atol=1e-5)
    assert np.allclose(exp.raw.reshape(2, 2, -1).sum(-1), exp.scores - exp.base_scores, atol=1e-4)
    assert exp.params == {
        "masker": jsonable(xb.ImageMasker.parse(masker)),
        "max_evals": 80,
        "batch_size": 20,
        "fixed_context": fixed_context,
    }
    assert exp.seed == 7 and exp.library == "shap" and exp.library_version == shap.__version__


def test_partition_top4_equals_argsort_flip(tiny_model, small_images) -> None:
    """Seed 003: outputs=shap.Explanation.argsort.flip[:4] is targets=top_k(4)."""
    exp = xb.explain(
        tiny_model, small_images[:1], "shap.Partition", targets=xb.top_k(4), masker="blur(6,6)", max_evals=64
    )
    explainer = shap.explainers.Partition(_to_uint8_predict(tiny_model), shap.maskers.Image("blur(6,6)", (24, 24, 3)))
    np.random.seed(0)
    ref = explainer(
        small_images[:1].astype(np.float64),
        max_evals=64,
        batch_size=50,
        outputs=shap.Explanation.argsort.flip[:4],
        silent=True,
    )
    assert exp.targets.tolist() == [np.argsort(-tiny_model.predict(small_images[:1])[0])[:4].tolist()]
    assert_close(exp.raw, np.transpose(ref.values, (0, 4, 3, 1, 2)))


def test_each_image_explains_its_own_targets(tiny_model, small_images) -> None:
    both = xb.explain(
        tiny_model, small_images, "shap.Partition", targets=[[0, 2], [4, 1]], masker="blur(4,4)", max_evals=40
    )
    for i, row in enumerate([[0, 2], [4, 1]]):
        alone = xb.explain(
            tiny_model, small_images[i : i + 1], "shap.Partition", targets=[row], masker="blur(4,4)", max_evals=40
        )
        assert_close(both.raw[i], alone.raw[0])
        assert both.targets[i].tolist() == row


@pytest.mark.parametrize(
    "masker",
    [
        ImageMasker(MaskKind.INPAINT_NS),
        ImageMasker.blur(5, 3),
        ImageMasker(MaskKind.CONSTANT, value=(10, 200, 30)),
        MaskKind.INPAINT_TELEA,
    ],
)
def test_partition_efficiency_for_every_masker(tiny_model, small_images, masker) -> None:
    exp = xb.explain(tiny_model, small_images, "shap.Partition", targets=xb.top_k(2), masker=masker, max_evals=50)
    sums = exp.raw.reshape(2, 2, -1).sum(axis=-1)
    assert np.allclose(sums, exp.scores - exp.base_scores, atol=1e-4)
    assert 2 * 2 <= exp.n_model_evals <= 2 * 50 + 2  # everything went through model.predict


def test_constant_masker_base_is_the_model_on_the_fill(tiny_model, small_images) -> None:
    exp = xb.explain(
        tiny_model,
        small_images,
        "shap.Partition",
        targets=[[3], [3]],
        masker=ImageMasker(MaskKind.CONSTANT, value=(10, 200, 30)),
        max_evals=30,
    )
    fill = np.broadcast_to(np.array([10, 200, 30], np.uint8), (1, 24, 24, 3))
    assert np.allclose(exp.base_scores[:, 0], tiny_model.predict(fill)[0, 3], atol=1e-5)


def test_partition_is_seeded_and_leaves_numpy_rng_alone(tiny_model, small_images) -> None:
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = xb.explain(tiny_model, small_images, "shap.Partition", targets=0, masker="blur(3,3)", max_evals=30, seed=4)
    assert np.array_equal(np.random.get_state()[1], state)
    b = xb.explain(tiny_model, small_images, "shap.Partition", targets=0, masker="blur(3,3)", max_evals=30, seed=4)
    assert np.array_equal(a.raw, b.raw) and np.array_equal(a.base_scores, b.base_scores)


def test_partition_tie_breaks_follow_the_seed() -> None:
    """shap orders equal-priority partitions with np.random.randn: with a tight budget the seed matters."""
    img = np.full((1, 16, 16, 3), 100, np.uint8)
    img[0, :8, :8] = img[0, 8:, 8:] = 200  # the top and bottom halves tie

    def energy(x: np.ndarray) -> np.ndarray:
        return (x[..., 0].astype(np.float64) ** 2).mean(axis=(1, 2))[:, None]

    masker = ImageMasker(MaskKind.CONSTANT, value=0)
    runs = {
        seed: xb.explain(
            BlackBoxModel(energy), img, "shap.Partition", targets=0, masker=masker, max_evals=8, batch_size=2, seed=seed
        ).raw
        for seed in range(3)
    }
    assert len({r.tobytes() for r in runs.values()}) == 3
    explainer = shap.explainers.Partition(energy, shap.maskers.Image(np.zeros((16, 16, 3)), (16, 16, 3)))
    for seed, raw in runs.items():
        np.random.seed(seed)
        ref = explainer(img.astype(np.float64), max_evals=8, batch_size=2, outputs=np.array([0]), silent=True)
        assert_close(raw, np.transpose(ref.values, (0, 4, 3, 1, 2)))


def test_black_box_gets_uint8_batches(small_images) -> None:
    seen: list[tuple[str, int]] = []

    def fn(x: np.ndarray) -> np.ndarray:
        seen.append((x.dtype.name, len(x)))
        return np.stack([x[..., 0].mean((1, 2)), x[:, :12].mean((1, 2, 3))], axis=1)

    exp = xb.explain(
        BlackBoxModel(fn, batch_size=64),
        small_images,
        "shap.Partition",
        targets=1,
        masker="blur(4,4)",
        max_evals=60,
        batch_size=20,
    )
    # the two images' calls of up to 20 images each are merged into one
    assert {d for d, _ in seen} == {"uint8"} and max(n for _, n in seen) <= 2 * 20
    assert exp.n_model_evals == sum(n for _, n in seen[1:])
    assert np.allclose(exp.raw.reshape(2, -1).sum(-1), exp.scores[:, 0] - exp.base_scores[:, 0], atol=1e-4)
    # a model reading the top half only: no credit below
    assert np.allclose(exp.attributions[:, 0, 12:], 0, atol=1e-6)


def test_masker_options_and_errors(tiny_model, small_images) -> None:
    assert ImageMasker.parse("blur(128,64)") == ImageMasker(MaskKind.BLUR, blur_kernel=(128, 64))
    assert ImageMasker.parse("inpaint_ns").shap_mask_value((2, 2, 3)) == "inpaint_ns"
    assert ImageMasker.blur(9).shap_mask_value((2, 2, 3)) == "blur(9,9)"
    fill = ImageMasker(MaskKind.CONSTANT, value=7).shap_mask_value((2, 2, 3))
    assert fill.shape == (2, 2, 3) and np.all(fill == 7)
    with pytest.raises(ValueError, match="masker"):
        ImageMasker.parse("blur(3)")
    with pytest.raises(ValueError, match="masker.value"):
        ImageMasker(MaskKind.CONSTANT, value=(1, 2))
    with pytest.raises(ValueError, match="masker"):
        xb.explain(tiny_model, small_images, "shap.Partition", masker="gaussian")
    with pytest.raises(ValueError, match="max_evals"):
        xb.explain(tiny_model, small_images, "shap.Partition", max_evals=1)
    with pytest.raises(ValueError, match="fixed_context"):
        xb.explain(tiny_model, small_images, "shap.Partition", fixed_context=2)
    with pytest.raises(TypeError, match="max_evals"):
        xb.explain(tiny_model, small_images, "shap.Partition", maxevals=10)


# ----------------------------------------------------------------- gradient
def test_gradient_matches_shap_called_directly(tiny_model, small_images) -> None:
    exp = xb.explain(
        tiny_model, small_images, "shap.Gradient", targets=[[1, 3], [1, 3]], seed=3, nsamples=12, background=3
    )
    bg = np.random.default_rng(3).uniform(0, 255, size=(3, 24, 24, 3)).astype(np.float32)
    bg_t = torch.from_numpy(bg.transpose(0, 3, 1, 2).copy())
    explainer = shap.GradientExplainer(tiny_model.pixel_module(), bg_t, batch_size=tiny_model.batch_size)
    ref = explainer.shap_values(tiny_model.pixel_tensor(small_images), nsamples=12, rseed=3)  # all 5 outputs
    assert exp.raw.shape == (2, 2, 3, 24, 24)
    assert_close(exp.raw, np.transpose(ref[..., [1, 3]], (0, 4, 1, 2, 3)))
    with torch.no_grad():
        base = tiny_model.pixel_module()(bg_t).mean(0).numpy()[[1, 3]]
    assert np.allclose(exp.base_scores, base[None], atol=1e-5)
    assert exp.n_model_evals == 3 + 2 * 2 * 12 + 3  # init pass, samples, base pass (not through predict)


def test_gradient_is_exact_on_a_linear_model() -> None:
    """Expected gradients of a linear model from one background image: values sum to f(x) - f(background)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    model = TorchModel(net, xb.Preprocess(scale="unit"))
    images = random_images((2, 8, 8, 3), seed=1)
    background = np.random.default_rng(2).uniform(0, 255, (8, 8, 3))
    exp = xb.explain(model, images, "shap.Gradient", targets=[[0, 2], [1, 0]], nsamples=5, background=background)
    sums = exp.raw.reshape(2, 2, -1).sum(-1)
    f_bg = model.pixel_module()(torch.from_numpy(background.transpose(2, 0, 1)[None]).float()).detach().numpy()[0]
    assert np.allclose(exp.base_scores, f_bg[exp.targets], atol=1e-5)
    assert np.allclose(sums, exp.scores - exp.base_scores, rtol=1e-4, atol=1e-4)


def test_gradient_restores_model_state(tiny_net, small_images) -> None:
    tiny_net.train()
    tiny_net.fc.weight.requires_grad_(False)
    hooks = hook_count(tiny_net)
    model = TorchModel(tiny_net, xb.Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3))
    a = xb.explain(model, small_images, "shap.Gradient", targets=0, nsamples=4, local_smoothing=2.0, seed=1)
    assert tiny_net.training and all(m.training for m in tiny_net.modules())
    assert not tiny_net.fc.weight.requires_grad and tiny_net.fc.bias.requires_grad
    assert all(p.grad is None for p in tiny_net.parameters()) and hook_count(tiny_net) == hooks
    b = xb.explain(model, small_images, "shap.Gradient", targets=0, nsamples=4, local_smoothing=2.0, seed=1)
    assert np.array_equal(a.raw, b.raw)  # local smoothing noise is seeded too
    c = xb.explain(model, small_images, "shap.Gradient", targets=0, nsamples=4, local_smoothing=2.0, seed=2)
    assert not np.allclose(a.raw, c.raw)


def test_gradient_needs_a_torch_model(small_images) -> None:
    with pytest.raises(xb.MethodNotApplicableError, match="shap.Partition"):
        xb.explain(BlackBoxModel(lambda x: x.mean((1, 2))), small_images, "shap.Gradient")


def test_gradient_background_errors(tiny_model, small_images) -> None:
    with pytest.raises(ValueError, match="background"):
        xb.explain(tiny_model, small_images, "shap.Gradient", background=np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="background"):
        xb.explain(tiny_model, small_images, "shap.Gradient", background="white")
    exp = xb.explain(tiny_model, small_images, "shap.Gradient", background=np.zeros((24, 24, 3)), nsamples=2)
    black = xb.explain(tiny_model, small_images, "shap.Gradient", nsamples=2)
    assert np.array_equal(exp.raw, black.raw) and exp.params["background"] == "array(24, 24, 3)"


@pytest.mark.slow
def test_partition_efficiency_on_effnet_chelsea(effnet, chelsea) -> None:
    """SHAP efficiency on the real model: values sum to f(x) - f(fully masked)."""
    exp = xb.explain(effnet, chelsea, "shap.Partition", targets=xb.top_k(2), masker="blur(64,64)", max_evals=200)
    assert exp.target_names[0, 0] in ("tabby", "tiger cat", "Egyptian cat")
    sums = exp.raw.reshape(1, 2, -1).astype(np.float64).sum(-1)
    assert np.allclose(sums, exp.scores - exp.base_scores, rtol=1e-4, atol=1e-3)
    assert exp.n_model_evals <= 1 + 200
    assert np.abs(exp.scores - exp.base_scores).min() > 0.5  # a real, non-trivial difference was split


def test_partition_tree_built_once_per_shape_and_equal_to_shaps() -> None:
    import shap
    from xai_bridge.adapters.methods.shap._maskers import _image_masker, _partition_tree

    first, second = _image_masker("blur(8,8)", (12, 10, 3)), _image_masker(0.0, (12, 10, 3))
    reference = shap.maskers.Image("blur(8,8)", (12, 10, 3))
    assert np.array_equal(first.clustering, reference.clustering)
    assert isinstance(first, shap.maskers.Image) and first.blur_kernel == (8, 8)
    assert first.clustering is not second.clustering  # each masker owns a copy
    assert _partition_tree.cache_info().currsize >= 1


@pytest.mark.parametrize("mask_value", ["blur(5,7)", "inpaint_telea", 37.4, "array"])
def test_masker_hands_out_the_bytes_of_shaps_masked_image(mask_value) -> None:
    import shap
    from xai_bridge.adapters.methods.shap._maskers import _image_masker

    shape = (12, 10, 3)
    rng = np.random.default_rng(0)
    if mask_value == "array":
        mask_value = rng.uniform(0, 255, shape)
    x = rng.integers(0, 256, shape).astype(np.float64)
    ours, theirs = _image_masker(mask_value, shape), shap.maskers.Image(mask_value, shape)
    for _ in range(3):
        mask = rng.random(x.size) < 0.5
        (got,), (ref,) = ours(mask, x), theirs(mask, x)
        assert got.dtype == np.uint8 and got.shape == ref.shape == (1, *shape)
        assert np.array_equal(got, np.clip(np.rint(ref), 0, 255).astype(np.uint8))
