"""captum backend: parity with captum called directly, axioms, seeding, black boxes, model state."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ca = pytest.importorskip("captum.attr")
from torch import nn  # noqa: E402
from xai_bridge.adapters._torch import hook_count  # noqa: E402

import xai_bridge as xb  # noqa: E402
from xai_bridge.options import DEFAULT_SEGMENTATION, NoiseTunnel, Segmentation  # noqa: E402

SEED = 7

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*(did not already require gradients|Setting backward hooks|Setting forward, backward hooks):UserWarning"
)


@pytest.fixture
def small(rgb_images: np.ndarray) -> np.ndarray:
    """Two 16x16 images of 4x4 colour blocks (so superpixels are meaningful)."""
    return np.kron(rgb_images[:, :4, :4], np.ones((1, 4, 4, 1), np.uint8))


@pytest.fixture
def blocky(rgb_images: np.ndarray) -> np.ndarray:
    """A 40x48 image of 4x4 colour blocks."""
    return np.kron(rgb_images[0, :10, :12], np.ones((4, 4, 1), np.uint8))


def _targets(exp: xb.Explanation, j: int) -> torch.Tensor:
    return torch.tensor(exp.targets[:, j], dtype=torch.int64)


def _direct(fn, seed: int = SEED):
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed)
            return fn()
    finally:
        np.random.set_state(state)


def _random_baselines(images: np.ndarray, count: int, seed: int = SEED) -> list[torch.Tensor]:
    """The backend's documented draw order: baseline by baseline, image by image."""
    rng = np.random.default_rng(seed)
    n, h, w = images.shape[:3]
    out = []
    for _ in range(count):
        draws = [rng.uniform(0.0, 255.0, (3, h, w)).astype(np.float32) for _ in range(n)]
        out.append(torch.from_numpy(np.stack(draws)))
    return out


# --- gradient methods: parity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, direct_kwargs",
    [
        ("Saliency", {}, {"abs": True}),
        ("Saliency", {"abs": False}, {"abs": False}),
        ("InputXGradient", {}, {}),
        ("GuidedBackprop", {}, {}),
        ("Deconvolution", {}, {}),
        ("LRP", {}, {}),
        (
            "IntegratedGradients",
            {"n_steps": 10, "internal_batch_size": 7, "baselines": (10, 20, 30)},
            {"n_steps": 10, "internal_batch_size": 7, "method": "gausslegendre"},
        ),
        ("DeepLift", {"baselines": 0}, {}),
    ],
)
def test_gradient_parity(tiny_model, small, name, params, direct_kwargs) -> None:
    exp = xb.explain(tiny_model, small, f"captum.{name}", targets=xb.top_k(2), seed=SEED, **params)
    net = tiny_model.pixel_module()
    x = tiny_model.pixel_tensor(small)
    assert exp.raw.shape == (2, 2, 3, 16, 16)
    np.testing.assert_allclose(exp.attributions, exp.raw.sum(axis=2), rtol=1e-6)
    for j in range(2):
        kwargs = dict(direct_kwargs)
        if "baselines" in params:
            b = params["baselines"]
            b = torch.tensor(b, dtype=torch.float32).view(1, 3, 1, 1) if isinstance(b, tuple) else float(b)
            kwargs["baselines"] = (b * torch.ones_like(x)) if isinstance(b, torch.Tensor) else b
            kwargs["return_convergence_delta"] = True
        with tiny_model.guard(freeze_params=True):
            out = _direct(lambda: getattr(ca, name)(net).attribute(x.clone(), target=_targets(exp, j), **kwargs))
        attr = out[0] if isinstance(out, tuple) else out
        np.testing.assert_allclose(exp.raw[:, j], attr.detach().numpy(), rtol=1e-5, atol=1e-6)
        if isinstance(out, tuple):
            np.testing.assert_allclose(
                exp.extras["convergence_delta"][:, j], out[1].detach().numpy(), rtol=1e-4, atol=1e-5
            )
    assert exp.n_model_evals > 0
    assert not any("rule" in vars(m) for m in net.modules())  # LRP's rule attributes removed


def test_gradient_shap_and_deeplift_shap_parity(tiny_model, small) -> None:
    net = tiny_model.pixel_module()
    x = tiny_model.pixel_tensor(small)
    for name, params, kwargs in [
        ("GradientShap", {"n_samples": 4, "stdevs": 5.0}, {"n_samples": 4, "stdevs": 5.0}),
        ("DeepLiftShap", {}, {}),
    ]:
        exp = xb.explain(tiny_model, small, f"captum.{name}", targets=xb.top_k(1), seed=SEED, **params)
        dist = _random_baselines(small, 5)
        algo = getattr(ca, name)(net)
        with tiny_model.guard(freeze_params=True):
            want = _direct(
                lambda: [
                    algo.attribute(
                        x[i : i + 1],
                        baselines=torch.cat([d[i : i + 1] for d in dist]),
                        target=_targets(exp, 0)[i : i + 1],
                        **kwargs,
                    )
                    .detach()
                    .numpy()
                    for i in range(2)
                ]
            )
        np.testing.assert_allclose(exp.raw[:, 0], np.concatenate(want), rtol=1e-5, atol=1e-6)
        assert exp.seed == SEED
        with torch.no_grad():
            expected_base = torch.stack([net(d) for d in dist]).mean(0).gather(1, _targets(exp, 0)[:, None])
        np.testing.assert_allclose(exp.base_scores, expected_base.numpy(), rtol=1e-5)


def test_ig_random_baselines_averaged_seed002(tiny_model, small) -> None:
    """IG averaged over several random baselines (Keras IG tutorial): mean of captum IG over each baseline."""
    exp = xb.explain(
        tiny_model,
        small,
        "captum.IntegratedGradients",
        targets=0,
        seed=SEED,
        baselines=["random", "random", "random"],
        n_steps=8,
    )
    net = tiny_model.pixel_module()
    x = tiny_model.pixel_tensor(small)
    tgt = torch.zeros(2, dtype=torch.int64)
    outs = [
        ca.IntegratedGradients(net).attribute(
            x, baselines=b, target=tgt, n_steps=8, internal_batch_size=8, return_convergence_delta=True
        )
        for b in _random_baselines(small, 3)
    ]
    np.testing.assert_allclose(exp.raw[:, 0], np.mean([o[0].detach().numpy() for o in outs], 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        exp.extras["convergence_delta"][:, 0], np.mean([o[1].numpy() for o in outs], 0), rtol=1e-4, atol=1e-5
    )
    assert exp.params["baselines"] == ["random"] * 3 and exp.seed == SEED
    # completeness of the average: sum(attr) = f(x) - mean f(b) + mean delta (captum's sign)
    gap = exp.scores[:, 0] - exp.base_scores[:, 0]
    np.testing.assert_allclose(
        exp.attributions.sum(axis=(2, 3))[:, 0], gap + exp.extras["convergence_delta"][:, 0], rtol=1e-3, atol=1e-3
    )
    again = xb.explain(
        tiny_model,
        small,
        "captum.IntegratedGradients",
        targets=0,
        seed=SEED,
        baselines=["random", "random", "random"],
        n_steps=8,
    )
    np.testing.assert_array_equal(again.attributions, exp.attributions)
    other = xb.explain(
        tiny_model,
        small,
        "captum.IntegratedGradients",
        targets=0,
        seed=SEED + 1,
        baselines=["random", "random", "random"],
        n_steps=8,
    )
    assert not np.allclose(other.attributions, exp.attributions)


def test_ig_completeness_tiny(tiny_model, small) -> None:
    exp = xb.explain(tiny_model, small, "captum.IntegratedGradients", targets=xb.top_k(2), n_steps=50, baselines="mean")
    gap = exp.scores - exp.base_scores
    np.testing.assert_allclose(exp.attributions.sum(axis=(2, 3)), gap, rtol=0.02, atol=1e-3)
    assert np.abs(exp.extras["convergence_delta"]).max() < 0.02 * np.abs(gap).max()
    assert exp.params["internal_batch_size"] == tiny_model.batch_size
    assert exp.n_model_evals >= 2 * 2 * 50  # 2 targets x 2 images x 50 steps


@pytest.mark.parametrize(
    "nt",
    [
        NoiseTunnel("vargrad", nt_samples=4, stdevs=20.0),
        {"kind": "smoothgrad_sq", "nt_samples": 3, "stdevs": 10.0, "nt_samples_batch_size": 2},
    ],
)
@pytest.mark.parametrize("name", ["Saliency", "IntegratedGradients"])
def test_noise_tunnel_parity(tiny_model, small, nt, name) -> None:
    extra = {"n_steps": 8} if name == "IntegratedGradients" else {}
    exp = xb.explain(tiny_model, small, f"captum.{name}", targets=1, seed=SEED, noise_tunnel=nt, **extra)
    cfg = nt if isinstance(nt, NoiseTunnel) else NoiseTunnel(**nt)
    net = tiny_model.pixel_module()
    x = tiny_model.pixel_tensor(small)
    kwargs = (
        {"baselines": torch.zeros_like(x), "n_steps": 8, "method": "gausslegendre", "internal_batch_size": 8}
        if extra
        else {"abs": True}
    )
    with tiny_model.guard(freeze_params=True):
        want = _direct(
            lambda: ca.NoiseTunnel(getattr(ca, name)(net)).attribute(
                x,
                nt_type=cfg.kind.value,
                nt_samples=cfg.nt_samples,
                stdevs=cfg.stdevs,
                nt_samples_batch_size=cfg.nt_samples_batch_size,
                target=torch.ones(2, dtype=torch.int64),
                **kwargs,
            )
        )
    np.testing.assert_allclose(exp.raw[:, 0], want.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert exp.seed == SEED and exp.params["noise_tunnel"]["kind"] == cfg.kind.value
    assert "convergence_delta" not in exp.extras


# --- perturbation methods -------------------------------------------------------------------------------------

SEG = Segmentation("slic", {"n_segments": 8, "compactness": 10})


@pytest.mark.parametrize(
    "name, params, kwargs",
    [
        ("FeatureAblation", {}, {}),
        ("ShapleyValueSampling", {"n_samples": 2}, {"n_samples": 2}),
        ("KernelShap", {"n_samples": 24}, {"n_samples": 24}),
        ("Lime", {"n_samples": 24}, {"n_samples": 24}),
        ("Occlusion", {"window": 6, "stride": 4, "baselines": 128}, {}),
    ],
)
def test_perturbation_parity_and_black_box(tiny_model, small, name, params, kwargs) -> None:
    if name != "Occlusion":
        params = {**params, "segmentation": SEG}
    exp = xb.explain(
        tiny_model, small, f"captum.{name}", targets=xb.top_k(1), seed=SEED, perturbations_per_eval=5, **params
    )
    net = tiny_model.pixel_module()
    x = tiny_model.pixel_tensor(small)
    base = float(params.get("baselines", 0))
    for i in range(2):
        call = dict(
            kwargs, perturbations_per_eval=5, baselines=torch.full((1, 3, 16, 16), base), target=int(exp.targets[i, 0])
        )
        if name == "Occlusion":
            call.update(sliding_window_shapes=(3, 6, 6), strides=(3, 4, 4))
        else:
            mask = SEG(small[i])
            np.testing.assert_array_equal(exp.extras["segments"][i, 0], mask)
            call["feature_mask"] = torch.as_tensor(mask, dtype=torch.int64)[None, None]
        with tiny_model.guard(freeze_params=True), torch.no_grad():
            want = _direct(lambda: getattr(ca, name)(net).attribute(x[i : i + 1], **call))
        np.testing.assert_allclose(exp.attributions[i, 0], want[0, 0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(want[0, 0].numpy(), want[0, 2].numpy())  # one value per pixel
    assert exp.raw is None and exp.n_model_evals > 0
    with torch.no_grad():
        f_base = net(torch.full((2, 3, 16, 16), base)).gather(1, torch.tensor(exp.targets))
    np.testing.assert_allclose(exp.base_scores, f_base.numpy(), rtol=1e-5)
    # the same method on a black box (uint8 NHWC -> predict) gives the same values: pixels stay integers
    box = xb.BlackBoxModel(tiny_model.predict, output_kind="logits", batch_size=5)
    boxed = xb.explain(box, small, f"captum.{name}", targets=exp.targets, seed=SEED, perturbations_per_eval=5, **params)
    np.testing.assert_allclose(boxed.attributions, exp.attributions, rtol=1e-4, atol=1e-5)
    assert boxed.n_model_evals == exp.n_model_evals


def test_superpixel_extras_and_default_segmentation(tiny_model, small) -> None:
    exp = xb.explain(tiny_model, small, "captum.FeatureAblation", targets=xb.top_k(2))
    assert exp.params["segmentation"] == DEFAULT_SEGMENTATION.describe()
    seg = exp.extras["segments"]
    assert seg.shape == (2, 2, 16, 16) and seg.dtype == np.int32
    w = exp.extras["superpixel_weights"]
    for i in range(2):
        for s in range(int(seg[i, 0].max()) + 1):
            np.testing.assert_allclose(exp.attributions[i, 0][seg[i, 0] == s], w[i, 0, s], rtol=1e-5)
    # FeatureAblation: each superpixel's value is f(x) - f(x with it ablated to black)
    i, s = 0, 0
    ablated = small[i : i + 1].copy()
    ablated[0][seg[i, 0] == s] = 0
    drop = exp.scores[i, 0] - tiny_model.predict(ablated)[0, exp.targets[i, 0]]
    np.testing.assert_allclose(w[i, 0, s], drop, rtol=1e-4, atol=1e-5)


def test_seeded_and_global_rng_untouched(tiny_model, small) -> None:
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = xb.explain(tiny_model, small, "captum.KernelShap", seed=3, n_samples=20, segmentation=SEG)
    b = xb.explain(tiny_model, small, "captum.KernelShap", seed=3, n_samples=20, segmentation=SEG)
    c = xb.explain(tiny_model, small, "captum.KernelShap", seed=4, n_samples=20, segmentation=SEG)
    np.testing.assert_array_equal(a.attributions, b.attributions)
    assert not np.allclose(a.attributions, c.attributions)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert a.seed == 3


# --- errors and model state -----------------------------------------------------------------------------------


def test_gradient_method_on_black_box_names_working_methods(tiny_model, small) -> None:
    box = xb.BlackBoxModel(tiny_model.predict, output_kind="logits")
    with pytest.raises(xb.MethodNotApplicableError, match="captum.IntegratedGradients.*needs gradients") as info:
        xb.explain(box, small, "captum.IntegratedGradients")
    for name in (
        "captum.FeatureAblation",
        "captum.KernelShap",
        "captum.Lime",
        "captum.Occlusion",
        "captum.ShapleyValueSampling",
    ):
        assert name in str(info.value)
    assert "captum.Saliency" not in str(info.value)
    specs = xb.default_registry().specs
    assert {n for n, s in specs.items() if n.startswith("captum.") and s.needs_gradients} == {
        f"captum.{c}"
        for c in (
            "Saliency",
            "InputXGradient",
            "IntegratedGradients",
            "DeepLift",
            "DeepLiftShap",
            "GradientShap",
            "GuidedBackprop",
            "Deconvolution",
            "LRP",
        )
    }


def test_model_state_restored(tiny_net, small) -> None:
    tiny_net.train()
    tiny_net.fc.weight.requires_grad_(True)
    model = xb.TorchModel(tiny_net, xb.Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3), batch_size=8)
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    for name in ("DeepLift", "GuidedBackprop", "LRP", "Occlusion"):
        xb.explain(model, small, f"captum.{name}", targets=0)
        assert tiny_net.training and tiny_net.fc.weight.requires_grad and tiny_net.fc.weight.grad is None
        assert hook_count(model.pixel_module()) == 0
        assert all(torch.equal(before[k], v) for k, v in tiny_net.state_dict().items())


def test_lrp_unsupported_layer_named(small) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model = xb.TorchModel(net, xb.Preprocess(size=(16, 16)))
    with pytest.raises(xb.MethodNotApplicableError, match=r"layer type GELU \(torch.nn.modules.activation.GELU\)"):
        xb.explain(model, small, "captum.LRP")
    assert not any("rule" in vars(m) for m in net.modules()) and hook_count(net) == 0


def _lrp_leftovers(net: nn.Module) -> list[str]:
    return [f"{n}.{k}" for n, m in net.named_modules() for k in ("activations", "activation", "rule") if k in vars(m)]


def test_lrp_leaves_no_activations_or_rules(tiny_net, small) -> None:
    """captum keeps each layer's input tensors in ``layer.activations``; nothing of the run may stay on the model."""
    model = xb.TorchModel(tiny_net, xb.Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3), batch_size=8)
    user_rule = ca._utils.lrp_rules.EpsilonRule(epsilon=1e-3)  # a rule the user set must stay as it was
    tiny_net.fc.rule = user_rule
    before = dict(vars(user_rule))
    exp = xb.explain(model, small, "captum.LRP", targets=0)
    assert np.isfinite(exp.attributions).all() and np.abs(exp.attributions).max() > 0
    assert _lrp_leftovers(tiny_net) == ["fc.rule"] and tiny_net.fc.rule is user_rule
    assert vars(user_rule) == before


def test_lrp_refused_run_leaves_no_activations(small) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(xb.MethodNotApplicableError):
        xb.explain(xb.TorchModel(net, xb.Preprocess(size=(16, 16))), small, "captum.LRP")
    assert _lrp_leftovers(net) == []


@pytest.mark.parametrize(
    "method, params, match",
    [
        ("captum.Saliency", {"n_steps": 3}, "valid parameters are"),
        ("captum.Occlusion", {"baselines": [0, 255]}, "baselines: .*one baseline"),
        ("captum.IntegratedGradients", {"baselines": "grey"}, "baselines: expected"),
        ("captum.IntegratedGradients", {"baselines": np.zeros((5, 5, 3))}, r"baselines: an image baseline"),
        ("captum.Saliency", {"noise_tunnel": {"kind": "blur"}}, "noise_tunnel.kind"),
        ("captum.Saliency", {"noise_tunnel": {"sigma": 1}}, "noise_tunnel: unknown"),
        ("captum.FeatureAblation", {"segmentation": Segmentation("slic", {"nope": 1})}, "unknown slic parameter"),
        ("captum.KernelShap", {"n_samples": 0}, "n_samples"),
    ],
)
def test_bad_params(tiny_model, small, method, params, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        xb.explain(tiny_model, small, method, **params)


def test_image_baseline_equals_number(tiny_model, small) -> None:
    a = xb.explain(tiny_model, small, "captum.IntegratedGradients", n_steps=8, baselines=50)
    b = xb.explain(
        tiny_model, small, "captum.IntegratedGradients", n_steps=8, baselines=np.full((16, 16, 3), 50, np.uint8)
    )
    c = xb.explain(tiny_model, small, "captum.IntegratedGradients", n_steps=8, baselines=(50, 50, 50))
    np.testing.assert_allclose(a.attributions, b.attributions, rtol=1e-6)
    np.testing.assert_allclose(a.attributions, c.attributions, rtol=1e-6)


# --- segmentation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seg",
    [
        Segmentation("slic", {"n_segments": 50}),
        Segmentation("felzenszwalb", {"scale": 50}),
        Segmentation("quickshift", {"kernel_size": 3, "max_dist": 10}),
    ],
)
def test_segmentation_kinds(seg, blocky) -> None:
    labels = seg(blocky)
    assert labels.shape == blocky.shape[:2] and labels.dtype == np.int32
    assert labels.min() == 0 and set(np.unique(labels)) == set(range(labels.max() + 1)) and labels.max() >= 4
    np.testing.assert_array_equal(labels, seg(blocky))
    # every superpixel is a union of whole colour blocks or lies inside one: no label crosses a block edge
    # more than the algorithm's smoothing allows; at least, equal-coloured pixels in one block share few labels
    block = labels[:4, :4]
    assert np.unique(block).size <= 2


def test_segmentation_validation() -> None:
    with pytest.raises(ValueError, match="kind: unknown segmentation 'watershed'"):
        Segmentation("watershed")
    assert Segmentation("slic") == Segmentation("slic", {})


# --- real model -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ig_completeness_effnet_chelsea(effnet, chelsea) -> None:
    image = np.ascontiguousarray(chelsea[::2, ::2])
    exp = xb.explain(effnet, image, "captum.IntegratedGradients", targets=285, n_steps=200, internal_batch_size=25)
    gap = exp.scores[0, 0] - exp.base_scores[0, 0]
    total = exp.attributions[0, 0].sum()
    assert abs(total - gap) / abs(gap) < 0.05, (total, gap)
    assert hook_count(effnet.pixel_module()) == 0


def test_chunks_of_batch_size_match_one_batch(tiny_net, tiny_model, small) -> None:
    one = xb.TorchModel(tiny_net, tiny_model.preprocess, batch_size=1)
    for method, params in [
        ("captum.IntegratedGradients", {"n_steps": 4, "baselines": "mean"}),
        ("captum.DeepLift", {}),
    ]:
        a = xb.explain(tiny_model, small, method, targets=xb.top_k(2), **params)
        b = xb.explain(one, small, method, targets=xb.top_k(2), **params)
        np.testing.assert_allclose(b.raw, a.raw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.base_scores, a.base_scores, rtol=1e-5)


def test_method_records_agree_with_captum() -> None:
    """What a record declares is what captum's class takes and says about itself."""
    import inspect

    import captum.attr as ca
    from xai_bridge.adapters.methods.captum import METHODS

    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    for name, method in METHODS.items():
        cls = getattr(ca, name)
        assert set(method.ctor) <= set(inspect.signature(cls.__init__).parameters), name
        assert set(method.call) <= set(inspect.signature(cls.attribute).parameters), name
        algo = cls(net, **{key: method.defaults[key] for key in method.ctor})
        if method.delta:
            assert algo.has_convergence_delta(), name
        if "multiply_by_inputs" in method.ctor:
            assert algo.multiplies_by_inputs is True, name
