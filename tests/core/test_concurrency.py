"""Threads: concurrent runs on one model take turns, seeded runs on different models match single-threaded ones.

The interleavings that corrupted models are forced, not hoped for: a gate in
the model's forward pass holds thread A inside its run until thread B is
inside its own (bounded waits, never a timed assert). With the per-model
ownership B cannot get in, A's wait runs out and the runs take turns; without
it both runs overlap exactly as in the failures reported.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_PREPROCESS, make_tiny_net
from helpers import module_state, random_images
from torch import nn
from xai_bridge.adapters.models import TorchModel, hook_count

import xai_bridge as xb
from xai_bridge._seeding import GLOBAL_RNG_LOCK

pytestmark = pytest.mark.timeout(120)

#: How long a gated thread waits for the other one (only reached when the runs take turns).
WAIT_S = 1.0


class Gate:
    """Thread A waits in its first gated forward until B is inside a forward; B waits there until A is done."""

    def __init__(self) -> None:
        self.armed = False
        self.a_inside = threading.Event()
        self.b_inside = threading.Event()
        self.a_done = threading.Event()
        self._passed: set[str] = set()

    def __call__(self) -> None:
        name = threading.current_thread().name
        if not self.armed or name in self._passed or name not in ("A", "B"):
            return
        self._passed.add(name)
        if name == "A":
            self.a_inside.set()
            self.b_inside.wait(WAIT_S)
        else:
            self.b_inside.set()
            self.a_done.wait(WAIT_S)


class Gated(nn.Module):
    """A module calling ``gate()`` before its ``inner`` module."""

    def __init__(self, inner: nn.Module, gate: Gate) -> None:
        super().__init__()
        self.inner = inner
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.gate()
        return self.inner(x)


def run_gated(gate: Gate, a: Callable[[], Any], b: Callable[[], Any]) -> tuple[dict[str, Any], list[str]]:
    """Run ``a`` in thread A and, once A is inside its gated forward, ``b`` in thread B."""
    results: dict[str, Any] = {}
    errors: list[str] = []

    def body(name: str, fn: Callable[[], Any]) -> None:
        try:
            results[name] = fn()
        except Exception as exc:  # recorded: the test shows every error
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            if name == "A":
                gate.a_done.set()

    gate.armed = True
    ta = threading.Thread(target=body, args=("A", a), name="A")
    tb = threading.Thread(target=body, args=("B", b), name="B")
    ta.start()
    assert gate.a_inside.wait(30), "thread A never reached its forward pass"
    tb.start()
    ta.join(60)
    tb.join(60)
    assert not ta.is_alive() and not tb.is_alive()
    return results, errors


def _images() -> np.ndarray:
    return random_images((2, 32, 32, 3))


def _user_state(net: nn.Module) -> None:
    """A model as users leave it: training mode, one frozen parameter."""
    net.train()
    net.fc.weight.requires_grad_(False)


@pytest.mark.parametrize("method_b", ["gradcam.GradCAM", "captum.IntegratedGradients", "torchcam.GradCAMpp"])
def test_same_model_two_threads_take_turns(method_b: str) -> None:
    gate = Gate()
    tiny = make_tiny_net(0)
    net = Gated(tiny, gate)
    _user_state(tiny)
    model = TorchModel(net, TINY_PREPROCESS, batch_size=8, tune_batch=False)
    images = _images()
    before = module_state(net)
    expected = {m: xb.explain(model, images, m, targets=1) for m in ("builtin.Saliency", method_b)}
    assert module_state(net) == before
    results, errors = run_gated(
        gate,
        lambda: xb.explain(model, images, "builtin.Saliency", targets=1),
        lambda: xb.explain(model, images, method_b, targets=1),
    )
    assert errors == []
    assert module_state(net) == before and hook_count(net) == 0
    assert tiny.training and not tiny.fc.weight.requires_grad and tiny.fc.bias.requires_grad
    np.testing.assert_array_equal(results["A"].attributions, expected["builtin.Saliency"].attributions)
    np.testing.assert_array_equal(results["B"].attributions, expected[method_b].attributions)
    np.testing.assert_array_equal(results["B"].scores, expected[method_b].scores)


def test_two_models_sharing_a_backbone_take_turns() -> None:
    """Two heads on one backbone (two TorchModels, two user modules): the shared submodules are held too."""
    gate = Gate()
    backbone = Gated(make_tiny_net(0), gate)
    _user_state(backbone.inner)
    heads = [nn.Sequential(backbone, nn.Linear(5, 3)), nn.Sequential(backbone, nn.Linear(5, 4))]
    models = [TorchModel(h, TINY_PREPROCESS, batch_size=8, tune_batch=False) for h in heads]
    images = _images()
    before = module_state(backbone)
    expected = [xb.explain(models[0], images, "builtin.Saliency", targets=1)]
    expected.append(xb.explain(models[1], images, "gradcam.GradCAM", targets=2, layer="0.inner.features.4"))
    results, errors = run_gated(
        gate,
        lambda: xb.explain(models[0], images, "builtin.Saliency", targets=1),
        lambda: xb.explain(models[1], images, "gradcam.GradCAM", targets=2, layer="0.inner.features.4"),
    )
    assert errors == []
    assert module_state(backbone) == before and hook_count(backbone) == 0
    np.testing.assert_array_equal(results["A"].attributions, expected[0].attributions)
    np.testing.assert_array_equal(results["B"].attributions, expected[1].attributions)


def test_predict_waits_for_a_run_on_the_same_model() -> None:
    """A bare predict (a perturbation method's path) in another thread never sees a run's temporary state."""
    gate = Gate()
    tiny = make_tiny_net(0)
    tiny.train()  # BatchNorm in training mode would give other outputs: predict must see eval mode
    model = TorchModel(Gated(tiny, gate), TINY_PREPROCESS, batch_size=8, tune_batch=False)
    images = _images()
    expected = model.predict(images)
    results, errors = run_gated(
        gate, lambda: xb.explain(model, images, "builtin.Saliency", targets=1), lambda: model.predict(images)
    )
    assert errors == []
    np.testing.assert_array_equal(results["B"], expected)
    assert all(m.training for m in tiny.modules())


# --- seeded runs on different models ------------------------------------------------------------------------


RANDOM_METHODS = [
    ("captum.GradientShap", {"n_samples": 3}),
    ("torchcam.SmoothGradCAMpp", {"num_samples": 3}),
    ("torchcam.SSCAM", {"num_samples": 2, "batch_size": 4}),
    ("shap.Gradient", {"nsamples": 8, "background": 2}),
    ("builtin.RISE", {"n_masks": 64}),
    ("lime.Lime", {"num_samples": 40}),
    ("gradcam.RandomCAM", {}),
]


def test_every_global_rng_touch_holds_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeding, forking or restoring a global generator outside the lock lets another thread's seed in."""
    outside: list[str] = []

    def watch(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not GLOBAL_RNG_LOCK._is_owned():  # type: ignore[attr-defined]
                outside.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    watch(torch, "manual_seed")
    watch(torch.random, "fork_rng")
    watch(np.random, "seed")
    watch(np.random, "set_state")
    model = TorchModel(make_tiny_net(1), TINY_PREPROCESS, batch_size=8, tune_batch=False)
    images = _images()
    for method, params in RANDOM_METHODS:
        xb.explain(model, images[:1], method, targets=1, seed=3, **params)
    exp = xb.explain(model, images[:1], "gradcam.GradCAM", targets=1)
    xb.evaluate(model, exp, ["road_morf", "randomisation", "faithfulness_corr", "random_logit"], seed=3)
    assert outside == []


def test_seeded_runs_on_two_models_in_threads_match_single_threaded() -> None:
    models = [TorchModel(make_tiny_net(s), TINY_PREPROCESS, batch_size=8, tune_batch=False) for s in (0, 1)]
    images = _images()

    def run(model: TorchModel) -> list[np.ndarray]:
        return [xb.explain(model, images, m, targets=1, seed=5, **p).attributions for m, p in RANDOM_METHODS]

    expected = [run(m) for m in models]
    got: dict[int, list[list[np.ndarray]]] = {0: [], 1: []}
    start = threading.Barrier(2)

    def work(i: int) -> None:
        start.wait(30)
        for _ in range(2):
            got[i].append(run(models[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    for i in (0, 1):
        assert len(got[i]) == 2
        for repeat in got[i]:
            for (method, _), a, b in zip(RANDOM_METHODS, repeat, expected[i], strict=True):
                np.testing.assert_array_equal(a, b, err_msg=method)


# --- files --------------------------------------------------------------------------------------------------


def test_two_threads_saving_one_path_both_succeed(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both writers reach the rename before either renames: each must have its own temporary file."""
    exp = xb.explain(TorchModel(make_tiny_net(0), TINY_PREPROCESS), _images()[:1], "builtin.Saliency", targets=1)
    both = threading.Barrier(2)
    original = os.replace

    def replace(src: Any, dst: Any) -> None:
        if threading.current_thread().name.startswith("saver"):
            both.wait(30)
        original(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    errors: list[str] = []

    def save() -> None:
        try:
            exp.save(tmp_path / "same.npz")
        except Exception as exc:  # recorded: the test shows every error
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=save, name=f"saver{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["same.npz"]
    np.testing.assert_array_equal(xb.Explanation.load(tmp_path / "same.npz").attributions, exp.attributions)
