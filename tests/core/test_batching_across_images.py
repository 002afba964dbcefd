"""Batching across images: N images explained at once equal N single-image runs, in fewer model calls.

LIME, RISE and occlusion batch every image's perturbations together; shap's
Partition runs one explainer per image concurrently, merging their calls
(:func:`xai_bridge.batching.merged_calls`). The comparisons are bit for bit,
on models whose output for an image does not depend on the rest of its batch:
an integer model (exact arithmetic, coarse outputs so that shap's priority ties,
broken with numpy's global generator, really occur) and a torch model run one
image per forward pass.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from xai_bridge.adapters.models import BlackBoxModel, TorchModel

import xai_bridge as xb
from xai_bridge._seeding import GLOBAL_RNG_LOCK, numpy_seeded
from xai_bridge.batching import merged_calls
from xai_bridge.options import ImageMasker, MaskKind

_WEIGHTS = np.random.default_rng(0).integers(0, 3, size=(48, 5))


def exact(batch: np.ndarray) -> np.ndarray:
    """5 outputs from 4x4 block sums of a 24x24 image in integer arithmetic: the same for any batch."""
    x = batch.astype(np.int64)
    pooled = x.reshape(len(x), 4, 6, 4, 6, 3).sum(axis=(2, 4)).reshape(len(x), -1)
    return ((pooled @ _WEIGHTS) // 1024).astype(np.float32)  # coarse: equal outputs are common


class Spy:
    """A model that records the size of every ``predict`` call."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.calls: list[int] = []

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(len(images))
        return self.model.predict(images)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)


METHODS = {
    "lime.Lime": {"num_samples": 40, "segmentation": "slic", "batch_size": 16},
    "builtin.RISE": {"n_masks": 60, "grid": 4},
    "builtin.Occlusion": {"window": 8, "stride": 4},
    "shap.Partition": {"masker": ImageMasker(MaskKind.CONSTANT), "max_evals": 100, "batch_size": 8},
}
ARRAYS = ("attributions", "raw", "base_scores", "scores", "targets")


@pytest.fixture
def images() -> np.ndarray:
    """Four 24x24 images, each one random 6x6 tile repeated: the symmetry makes shap's priorities tie."""
    rng = np.random.default_rng(3)
    return np.stack([np.tile(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8), (4, 4, 1)) for _ in range(4)])


def _runs(model: object, images: np.ndarray, method: str, targets: list[list[int]], **params: object):
    model.predict(images[:1])  # the output count is known: no prediction pass on either side
    spy_all, spy_one = Spy(model), Spy(model)
    together = xb.explain(spy_all, images, method, targets=targets, seed=5, **params)
    alone = [
        xb.explain(spy_one, images[i : i + 1], method, targets=[targets[i]], seed=5, **params)
        for i in range(len(images))
    ]
    return together, alone, spy_all.calls, spy_one.calls


def _assert_same(together: xb.Explanation, alone: list[xb.Explanation]) -> None:
    for name in ARRAYS:
        value = getattr(together, name)
        if value is None:
            assert all(getattr(a, name) is None for a in alone), name
            continue
        expected = np.concatenate([getattr(a, name) for a in alone])
        assert value.dtype == expected.dtype and np.array_equal(value, expected), name
    for key, value in together.extras.items():  # per-superpixel extras are padded to the most superpixels
        for i, a in enumerate(alone):
            own = a.extras[key][0]
            head = value[i][tuple(slice(0, d) for d in own.shape)]
            assert np.array_equal(head, own, equal_nan=own.dtype.kind == "f"), key
    assert together.params == alone[0].params


@pytest.mark.parametrize("method", list(METHODS))
def test_n_images_equal_n_single_runs_bit_for_bit(images, method) -> None:
    pytest.importorskip(method.split(".")[0] if method.startswith(("lime", "shap")) else "numpy")
    targets = [[1, 3], [0, 3], [1, 3], [4, 2]]
    model = BlackBoxModel(exact, batch_size=16)
    together, alone, calls_all, calls_one = _runs(model, images, method, targets, **METHODS[method])
    _assert_same(together, alone)
    assert together.n_model_evals == sum(a.n_model_evals for a in alone)
    assert len(calls_all) < len(calls_one)  # the images shared model calls


def test_shap_ties_depend_on_the_seed(images) -> None:
    """The integer model's ties make shap's tie-breaking draws matter, so the equality above is not vacuous."""
    pytest.importorskip("shap")
    model = BlackBoxModel(exact)
    runs = [
        xb.explain(model, images[:2], "shap.Partition", targets=1, seed=seed, **METHODS["shap.Partition"]).raw
        for seed in (5, 6)
    ]
    assert np.abs(runs[0]).sum() > 100
    assert not np.array_equal(runs[0][0], runs[1][0]) and not np.array_equal(runs[0][1], runs[1][1])


def test_shap_merges_the_images_calls(images) -> None:
    pytest.importorskip("shap")
    _, _, calls_all, calls_one = _runs(
        BlackBoxModel(exact), images, "shap.Partition", [[1]] * 4, **METHODS["shap.Partition"]
    )
    # each image asks for at most batch_size=8 masked images at a time; merged calls carry several images' rounds
    assert max(calls_one) <= 8 < max(calls_all) <= 4 * 8
    assert len(calls_all) <= len(calls_one) / 3


@pytest.mark.parametrize("method", ["shap.Partition", "lime.Lime", "builtin.RISE"])
def test_torch_model_one_image_per_forward_bit_for_bit(tiny_net, images, method) -> None:
    pytest.importorskip(method.split(".")[0] if method.startswith(("lime", "shap")) else "numpy")
    model = TorchModel(tiny_net, xb.Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3), batch_size=1, tune_batch=False)
    together, alone, _, _ = _runs(model, images[:3], method, [[1], [2], [1]], **METHODS[method])
    _assert_same(together, alone)


def test_shap_restores_numpy_global_generator(images) -> None:
    pytest.importorskip("shap")
    np.random.seed(123)
    expected = np.random.get_state()[1].copy()
    xb.explain(BlackBoxModel(exact), images[:2], "shap.Partition", targets=1, **METHODS["shap.Partition"])
    assert np.array_equal(np.random.get_state()[1], expected)


def _job(k: int, rounds: int = 3):
    """A job that draws from numpy's global generator between its calls, as shap does."""

    def run(predict):
        total = []
        for r in range(rounds):
            out = predict(np.full((k + 1, 2, 2, 3), 10 * k + r, np.uint8))
            total.append((out.sum(), np.random.randn()))
        return total

    return run


def _double(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1)[:, :1].astype(np.float32) * 2


def _alone(k: int, seed: int) -> list:
    with numpy_seeded(seed):
        return _job(k)(_double)


def test_merged_calls_equal_jobs_run_alone_and_merge_them() -> None:
    calls: list[int] = []

    def predict(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        return _double(images)

    seeds = [4, 4, 9, 1]
    results = merged_calls(predict, [_job(k) for k in range(4)], numpy_seeds=seeds)
    assert results == [_alone(k, seed) for k, seed in enumerate(seeds)]
    assert sum(calls) == 3 * (1 + 2 + 3 + 4) and len(calls) < 12


def test_merged_calls_without_waiting_still_correct() -> None:
    """wait=0: pending calls run at once, in many small calls; the results do not change."""
    results = merged_calls(_double, [_job(k) for k in range(3)], numpy_seeds=[2, 3, 4], wait=0.0, max_jobs=2)
    assert results == [_alone(k, s) for k, s in zip(range(3), [2, 3, 4], strict=True)]


def test_merged_calls_inside_a_seeded_section_does_not_deadlock() -> None:
    """Callers may already hold the global RNG lock (e.g. a metric running explain under numpy_seeded)."""
    with numpy_seeded(0), GLOBAL_RNG_LOCK:
        results = merged_calls(_double, [_job(k) for k in range(2)], numpy_seeds=[1, 1])
    assert results == [_alone(0, 1), _alone(1, 1)]


def test_merged_calls_propagate_failures_without_hanging() -> None:
    def failing_job(predict):
        predict(np.zeros((1, 2, 2, 3), np.uint8))
        raise KeyError("job failed")

    with pytest.raises(KeyError, match="job failed"):
        merged_calls(_double, [_job(0, rounds=50), failing_job, _job(1, rounds=50)])

    def broken_model(images: np.ndarray) -> np.ndarray:
        raise ValueError("model: broken")

    with pytest.raises(ValueError, match="model: broken"):
        merged_calls(broken_model, [_job(k) for k in range(3)])
    assert threading.active_count() < 10  # every worker thread ended
