"""captum IntegratedGradients with every image, target and baseline as rows of shared calls; n_steps="auto"."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ca = pytest.importorskip("captum.attr")

from xai_bridge.adapters.methods.captum._ig import group_size as _group_size  # noqa: E402

import xai_bridge as xb  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*(did not already require gradients):UserWarning")

BASELINES = ["random"] * 3


@pytest.fixture
def images(rgb_images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb_images[:, :16, :16])


def _ig(model, images, **params):
    return xb.explain(model, images, "captum.IntegratedGradients", targets=xb.top_k(2), seed=3, **params)


def test_rows_of_images_targets_and_baselines_equal_one_captum_call_each(tiny_model, images) -> None:
    exp = _ig(tiny_model, images, n_steps=12, baselines=BASELINES, internal_batch_size=8)
    net, x = tiny_model.pixel_module(), tiny_model.pixel_tensor(images)
    rng = np.random.default_rng(3)  # the documented draw order: baseline by baseline, image by image
    bases = [
        torch.from_numpy(np.stack([rng.uniform(0, 255, (3, 16, 16)).astype(np.float32) for _ in images]))
        for _ in BASELINES
    ]
    with tiny_model.guard(freeze_params=True):
        for j in range(2):
            target = torch.as_tensor(np.array(exp.targets[:, j]))
            outs = [
                ca.IntegratedGradients(net).attribute(
                    x, baselines=b, target=target, n_steps=12, internal_batch_size=8, return_convergence_delta=True
                )
                for b in bases
            ]
            want = np.mean([o[0].detach().numpy() for o in outs], axis=0)
            np.testing.assert_allclose(exp.raw[:, j], want, rtol=1e-4, atol=1e-6)
            delta = np.mean([o[1].detach().numpy() for o in outs], axis=0)
            np.testing.assert_allclose(exp.extras["convergence_delta"][:, j], delta, rtol=1e-3, atol=1e-5)
            with torch.no_grad():
                base = np.mean([net(b).gather(1, target[:, None]).numpy()[:, 0] for b in bases], axis=0)
            np.testing.assert_allclose(exp.base_scores[:, j], base, rtol=1e-5)
    # one pass per row and step, plus the end points once: 2 images x 2 targets x 3 baselines x 12 steps
    assert exp.n_model_evals == 2 * 2 * 3 * 12 + 2 + 2 * 3
    assert "n_steps" not in exp.extras and exp.params["n_steps"] == 12 and "tolerance" not in exp.params


def test_auto_steps_reach_the_tolerance_with_fewer_passes_than_a_50_step_trapezoid(tiny_model, images) -> None:
    fixed = _ig(tiny_model, images, n_steps=50, method="riemann_trapezoid", baselines=BASELINES)
    tolerance = float(np.abs(fixed.extras["convergence_delta"]).max())  # the trapezoid's completeness error
    auto = _ig(tiny_model, images, n_steps="auto", tolerance=tolerance, baselines=BASELINES)
    steps = auto.extras["n_steps"]
    assert steps.shape == (2, 2) and steps.dtype == np.int32
    assert set(np.unique(steps).tolist()) <= {4, 8, 16, 32, 64, 128, 256} and steps.max() < 512  # all converged
    assert np.abs(auto.extras["convergence_delta"]).max() <= tolerance
    gap = auto.scores - auto.base_scores  # completeness, checked against the maps themselves
    np.testing.assert_allclose(auto.attributions.sum(axis=(2, 3)), gap + auto.extras["convergence_delta"], atol=1e-4)
    # every point is reused when the steps double: passes = points x baselines + the end points' outputs
    assert auto.n_model_evals == int(steps.sum()) * len(BASELINES) + 2 + 2 * len(BASELINES)
    assert auto.n_model_evals < fixed.n_model_evals
    assert auto.params["n_steps"] == "auto" and auto.params["tolerance"] == tolerance
    assert auto.params["method"] == "cosine_shifted_nested"


def test_auto_map_is_the_nested_rule_and_converges_to_captums_ig(tiny_model, images) -> None:
    one = _ig(tiny_model, images[:1], n_steps="auto", tolerance=1e9, baselines=0)  # stops after the first round
    assert one.extras["n_steps"].tolist() == [[4, 4]]
    net, x = tiny_model.pixel_module(), tiny_model.pixel_tensor(images[:1])
    us = (np.arange(4) + 0.5) / 4  # one baseline: offset 1/2
    alphas, weights = (1 - np.cos(np.pi * us)) / 2, np.pi * np.sin(np.pi * us) / 2
    with tiny_model.guard(freeze_params=True):
        for j, target in enumerate(one.targets[0]):
            path = (torch.as_tensor(alphas, dtype=torch.float32).view(-1, 1, 1, 1) * x).requires_grad_(True)
            (grad,) = torch.autograd.grad(net(path)[:, int(target)].sum(), path)
            want = (x[0] * (torch.as_tensor(weights, dtype=torch.float32).view(-1, 1, 1, 1) * grad).sum(0) / 4).numpy()
            np.testing.assert_allclose(one.raw[0, j], want, rtol=1e-4, atol=1e-7)
    fine = _ig(tiny_model, images, n_steps="auto", tolerance=1e-6, max_steps=256, baselines=BASELINES)
    captum = _ig(tiny_model, images, n_steps=256, baselines=BASELINES)  # Gauss-Legendre, many steps
    scale = np.abs(captum.attributions).max()
    assert np.abs(fine.attributions - captum.attributions).max() <= 1e-3 * scale
    assert np.abs(fine.extras["convergence_delta"]).max() <= np.abs(one.extras["convergence_delta"]).max()


def test_auto_stops_at_max_steps_and_records_it(tiny_model, images) -> None:
    exp = _ig(tiny_model, images[:1], n_steps="auto", tolerance=1e-12, max_steps=16, baselines=0)
    assert exp.extras["n_steps"].tolist() == [[16, 16]]  # 4, 8, 16 points; 32 would pass max_steps
    with pytest.raises(ValueError, match="tolerance"):
        _ig(tiny_model, images[:1], n_steps="auto", tolerance=0)
    with pytest.raises(ValueError, match="method: n_steps='auto'"):
        _ig(tiny_model, images[:1], n_steps="auto", method="gausslegendre")


def test_group_size_fills_captum_chunks() -> None:
    assert [_group_size(16, r) for r in (1, 2, 3, 5, 10, 16, 40)] == [1, 2, 2, 4, 8, 16, 16]
