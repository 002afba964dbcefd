"""explain() end to end with the built-in methods: targets, errors, state, provenance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_PREPROCESS, make_tiny_net
from xai_bridge.adapters.models import BlackBoxModel, TorchModel, hook_count

import xai_bridge as xb


def test_saliency_equals_autograd_by_hand(tiny_model, rgb_images) -> None:
    exp = xb.explain(tiny_model, rgb_images, "builtin.Saliency", targets=[1, 3])
    x = torch.from_numpy(rgb_images).permute(0, 3, 1, 2).float().requires_grad_(True)
    z = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    out = tiny_model.module((z / 255.0 - 0.5) / 0.25)
    (out[0, 1] + out[1, 3]).backward()
    expected = x.grad.abs().numpy()
    assert exp.raw.shape == (2, 1, 3, 40, 48)
    assert np.allclose(exp.raw[:, 0], expected, atol=1e-6)
    assert np.allclose(exp.attributions[:, 0], expected.sum(axis=1), atol=1e-6)
    assert exp.targets.tolist() == [[1], [3]]
    assert exp.target_names.tolist() == [["dog"], ["tree"]]
    assert np.allclose(exp.scores[:, 0], out.detach().numpy()[[0, 1], [1, 3]], atol=1e-5)
    with pytest.warns(DeprecationWarning, match="library"):  # backend: the older name, deprecated
        assert (
            exp.method == "builtin.Saliency"
            and exp.library == "builtin"
            and exp.backend == "builtin"
            and exp.seed is None
        )
    assert exp.params == {"abs": True}


def test_occlusion_exact_on_a_one_pixel_model() -> None:
    img = np.zeros((1, 8, 8, 3), np.uint8)
    img[0, 0, 0, 0] = 255
    img[0, 5, 5, 0] = 100  # the model ignores this pixel

    def fn(x: np.ndarray) -> np.ndarray:
        return np.stack([x[:, 0, 0, 0] / 255.0, np.zeros(len(x))], axis=1)

    exp = xb.explain(BlackBoxModel(fn), img, "builtin.Occlusion", targets=0, window=2, stride=2)
    expected = np.zeros((8, 8), np.float32)
    expected[:2, :2] = 1.0
    assert np.array_equal(exp.attributions[0, 0], expected)
    assert exp.n_model_evals == 1 + 16  # baseline pass + 16 windows
    assert exp.params["window"] == [2, 2] and exp.params["stride"] == [2, 2]


def test_occlusion_localises_the_quadrant_a_model_reads() -> None:
    def top_left(x: np.ndarray) -> np.ndarray:
        return x[:, :8, :8].mean(axis=(1, 2, 3))[:, None] / 255.0

    img = np.full((1, 16, 16, 3), 200, np.uint8)
    exp = xb.explain(BlackBoxModel(top_left), img, "builtin.Occlusion", targets=0, window=4, stride=4)
    quad = exp.attributions[0, 0]
    assert quad[:8, :8].min() > 0 and np.all(quad[8:, :] == 0) and np.all(quad[:, 8:] == 0)


def test_targets_forms(tiny_model, rgb_images) -> None:
    outputs = tiny_model.predict(rgb_images)
    top3 = xb.explain(tiny_model, rgb_images, "builtin.Saliency", targets=xb.top_k(3))
    assert top3.targets.tolist() == np.argsort(-outputs, axis=1)[:, :3].tolist()
    assert top3.attributions.shape == (2, 3, 40, 48)
    assert np.all(np.diff(top3.scores, axis=1) <= 0)
    assert xb.explain(tiny_model, rgb_images, targets="top1").targets[:, 0].tolist() == outputs.argmax(1).tolist()
    assert xb.explain(tiny_model, rgb_images, targets="Car").targets.tolist() == [[2], [2]]
    assert xb.explain(tiny_model, rgb_images, targets=[[0, 4], ["cup", 1]]).targets.tolist() == [[0, 4], [4, 1]]
    with pytest.raises(ValueError, match="class 7 is out of range for a model with 5 outputs"):
        xb.explain(tiny_model, rgb_images, targets=7)
    with pytest.raises(ValueError, match="Did you mean 'car'"):
        xb.explain(tiny_model, rgb_images, targets="cars")
    with pytest.raises(ValueError, match="one entry per image"):
        xb.explain(tiny_model, rgb_images, targets=[1, 2, 3])


def test_gradient_method_on_black_box_names_what_works(rgb_images) -> None:
    box = BlackBoxModel(lambda x: x.mean(axis=(1, 2)))
    with pytest.raises(xb.MethodNotApplicableError, match="needs gradients.*builtin.Occlusion"):
        xb.explain(box, rgb_images, "builtin.Saliency")


def test_unknown_parameter_and_method(tiny_model, rgb_images) -> None:
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['n_steps'\].*\['abs'\]"):
        xb.explain(tiny_model, rgb_images, "builtin.Saliency", n_steps=3)
    with pytest.raises(xb.UnknownMethodError, match="builtin.Occlusion"):
        xb.explain(tiny_model, rgb_images, "builtin.oclusion")


def test_user_model_and_inputs_untouched(rgb_images) -> None:
    net = make_tiny_net(4).train()
    net.fc.weight.requires_grad_(False)
    model = TorchModel(net, TINY_PREPROCESS)
    before = rgb_images.copy()
    xb.explain_many(model, rgb_images, ["builtin.Saliency", ("builtin.Occlusion", {"window": 8})])
    assert net.training and all(m.training for m in net.modules())
    assert not net.fc.weight.requires_grad and net.fc.bias.requires_grad
    assert all(p.grad is None for p in net.parameters())
    assert hook_count(net) == 0
    assert np.array_equal(rgb_images, before)


def test_explain_many_shares_targets_and_matches_single_calls(tiny_model, rgb_images) -> None:
    many = xb.explain_many(
        tiny_model, rgb_images, ["builtin.Saliency", ("builtin.Occlusion", {"window": 8})], targets=xb.top_k(2)
    )
    assert list(many) == ["builtin.Saliency", "builtin.Occlusion"]
    single = xb.explain(tiny_model, rgb_images, "builtin.Occlusion", targets=xb.top_k(2), window=8)
    assert np.array_equal(many["builtin.Occlusion"].attributions, single.attributions)
    assert np.array_equal(many["builtin.Saliency"].targets, single.targets)
    with pytest.raises(ValueError, match="once"):
        xb.explain_many(tiny_model, rgb_images, ["builtin.Saliency", "builtin.Saliency"])


def test_torch_module_with_preprocess_and_tensor_inputs(tiny_net, rgb_images) -> None:
    tensor = torch.from_numpy(rgb_images).permute(0, 3, 1, 2).float() / 255.0
    exp = xb.explain(tiny_net, tensor, "builtin.Saliency", preprocess=TINY_PREPROCESS)
    ref = xb.explain(TorchModel(tiny_net, TINY_PREPROCESS), rgb_images, "builtin.Saliency")
    assert np.array_equal(exp.attributions, ref.attributions)


@pytest.mark.slow
def test_real_model_end_to_end(effnet, chelsea, tmp_path) -> None:
    exp = xb.explain(effnet, chelsea, "builtin.Saliency", targets=xb.top_k(2))
    assert exp.targets[0, 0] == 285 and exp.target_names[0, 0] == "Egyptian cat"
    assert exp.attributions.shape == (1, 2, *chelsea.shape[:2])
    assert xb.Explanation.load(exp.save(tmp_path / "e.npz")) == exp


def test_seed_must_be_a_non_negative_int(tiny_model, rgb_images) -> None:
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ValueError, match="seed: expected a non-negative integer"):
            xb.explain(tiny_model, rgb_images, "builtin.Saliency", seed=bad)


def test_budget_maps_onto_the_methods_own_parameter(tiny_model, rgb_images) -> None:
    by_budget = xb.explain(tiny_model, rgb_images, "builtin.RISE", budget=64, grid=4)
    by_own = xb.explain(tiny_model, rgb_images, "builtin.RISE", n_masks=64, grid=4)
    assert np.array_equal(by_budget.attributions, by_own.attributions)
    assert by_budget.params["n_masks"] == 64 and by_budget.n_model_evals == by_own.n_model_evals
    many = xb.explain_many(tiny_model, rgb_images, [("builtin.RISE", {"grid": 4})], budget=64)
    assert np.array_equal(many["builtin.RISE"].attributions, by_own.attributions)


def test_budget_errors(tiny_model, rgb_images) -> None:
    with pytest.raises(xb.ParameterError, match=r"budget: builtin.RISE got both budget=64 and its own n_masks=32"):
        xb.explain(tiny_model, rgb_images, "builtin.RISE", budget=64, n_masks=32)
    with pytest.raises(xb.ParameterError, match=r"budget: builtin.Occlusion has no evaluation budget.*'window'"):
        xb.explain(tiny_model, rgb_images, "builtin.Occlusion", budget=64)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(xb.ParameterError, match="budget: expected a positive number"):
            xb.explain(tiny_model, rgb_images, "builtin.RISE", budget=bad)
