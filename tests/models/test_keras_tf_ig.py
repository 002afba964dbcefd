"""captum's Integrated Gradients computed in TensorFlow for Keras models (issue 28 §4): the same numbers, no torch.

Each result is compared with captum itself on the torch bridge (the route every
other method takes), on a small functional CNN at 20x20.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("captum")
if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None:
    pytest.skip("tensorflow and keras are not installed (pip install 'xai-bridge[keras]')", allow_module_level=True)

from xai_bridge._load_order import triton_before_tensorflow  # noqa: E402

triton_before_tensorflow()  # TF 2.21 wheels crash a later `import triton` (torchvision imports it)

import keras  # noqa: E402
from helpers import random_images  # noqa: E402
from xai_bridge.adapters.methods._keras_ig import RULES, integration_rule  # noqa: E402
from xai_bridge.adapters.models.keras import KerasModel  # noqa: E402

import xai_bridge as xb  # noqa: E402

if keras.backend.backend() != "tensorflow":
    pytest.skip("these tests need KERAS_BACKEND=tensorflow", allow_module_level=True)

SIZE = 20
IG = "captum.IntegratedGradients"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Any:
    threads = torch.get_num_threads()  # torch's threads stall behind TensorFlow's on small CPUs
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_cnn() -> keras.Model:
    keras.utils.set_random_seed(3)
    inp = keras.Input((SIZE, SIZE, 3))
    c1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    c2 = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="tanh", name="c2")(c1)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(c2)
    return keras.Model(inp, keras.layers.Dense(3, name="logits")(pooled))


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    return make_cnn()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return random_images((2, SIZE, SIZE, 3))


def through_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send the next calls to captum on the torch bridge (the route before this backend existed)."""
    monkeypatch.setattr(KerasModel, "own_backend", lambda self, spec, backend: None)


def assert_close(actual: np.ndarray, expected: np.ndarray, tol: float = 1e-5) -> None:
    """Equal to ``tol`` relative to the largest magnitude of ``expected``, which must not vanish."""
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale)


CASES = {
    "defaults": (xb.Preprocess.inception(SIZE), {"n_steps": 12}, xb.top_k(2)),
    "caffe, trapezoid, baselines, small chunks": (
        xb.Preprocess.caffe(SIZE),
        {
            "n_steps": 6,
            "method": "riemann_trapezoid",
            "baselines": [0, "random", (10, 200, 30)],
            "internal_batch_size": 5,
        },
        [[0, 2], [1, 1]],
    ),
    "no multiply": (xb.Preprocess.inception(SIZE), {"n_steps": 5, "multiply_by_inputs": False}, 1),
    "resized from 27x17": (xb.Preprocess.inception(SIZE), {"n_steps": 5}, 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tensorflow_ig_equals_captum_on_the_torch_bridge(
    cnn: keras.Model, images: np.ndarray, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pre, params, targets = CASES[case]
    if case.startswith("resized"):
        images = random_images((2, 27, 17, 3))
    mine = xb.explain(cnn, images, IG, targets, preprocess=pre, **params)
    through_torch(monkeypatch)
    theirs = xb.explain(cnn, images, IG, targets, preprocess=pre, **params)
    assert "TensorFlow" in mine.library_version and "TensorFlow" not in theirs.library_version
    assert mine.library == theirs.library == "captum"
    assert mine.raw is not None and theirs.raw is not None
    assert_close(mine.raw, theirs.raw)
    assert_close(mine.attributions, theirs.attributions)
    assert mine.base_scores is not None and theirs.base_scores is not None
    np.testing.assert_allclose(mine.base_scores, theirs.base_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mine.scores, theirs.scores, rtol=1e-5, atol=1e-6)
    gap = np.abs(mine.scores - mine.base_scores).max()
    assert np.abs(mine.extras["convergence_delta"] - theirs.extras["convergence_delta"]).max() <= 1e-5 * gap
    assert mine.params == theirs.params and mine.seed == theirs.seed
    assert mine.n_model_evals == theirs.n_model_evals
    np.testing.assert_array_equal(mine.targets, theirs.targets)


def test_integration_rule_is_captums() -> None:
    from captum.attr._utils.approximation_methods import SUPPORTED_METHODS, approximation_parameters

    assert set(RULES) == set(SUPPORTED_METHODS)
    for rule in RULES:
        step_sizes, alphas = approximation_parameters(rule)
        for n in (2, 7, 50):
            mine_alphas, mine_steps = integration_rule(rule, n)
            np.testing.assert_allclose(mine_alphas, alphas(n), rtol=0, atol=1e-7)
            np.testing.assert_allclose(mine_steps, step_sizes(n), rtol=0, atol=1e-15)


def test_tensorflow_ig_is_complete(cnn: keras.Model, images: np.ndarray) -> None:
    e = xb.explain(cnn, images, IG, 0, preprocess=xb.Preprocess.inception(SIZE), n_steps=64)
    assert e.base_scores is not None and "TensorFlow" in e.library_version
    gap = e.scores[:, 0] - e.base_scores[:, 0]
    assert np.all(np.abs(gap) > 1e-3)
    total = e.attributions[:, 0].sum(axis=(1, 2))
    np.testing.assert_allclose(total, gap, rtol=0.02)
    np.testing.assert_allclose(e.extras["convergence_delta"][:, 0], total - gap, atol=1e-4 * np.abs(gap).max())


def test_chunks_of_one_image_give_the_same_map(cnn: keras.Model, images: np.ndarray) -> None:
    whole = KerasModel(cnn, xb.Preprocess.inception(SIZE))
    single = KerasModel(cnn, xb.Preprocess.inception(SIZE))
    assert whole.runner is not None and single.runner is not None
    single.runner.chunk = 1  # the Keras tutorial's loop: one path image per tape
    a = xb.explain(whole, images, IG, 2, n_steps=8)
    b = xb.explain(single, images, IG, 2, n_steps=8)
    assert_close(b.attributions, a.attributions)


def test_the_model_is_unchanged(cnn: keras.Model, images: np.ndarray) -> None:
    cnn.get_layer("c1").trainable = False  # the user's frozen layer stays frozen, the others trainable
    weights = [w.copy() for w in cnn.get_weights()]
    flags = [layer.trainable for layer in cnn.layers]
    names = [layer.name for layer in cnn.layers]
    try:
        e = xb.explain(cnn, images, IG, 1, preprocess=xb.Preprocess.inception(SIZE), n_steps=4, baselines="random")
        assert "TensorFlow" in e.library_version
        assert [layer.trainable for layer in cnn.layers] == flags and cnn.trainable
        assert [layer.name for layer in cnn.layers] == names and len(cnn.weights) == len(weights)
        assert all(np.array_equal(a, b) for a, b in zip(weights, cnn.get_weights(), strict=True))
    finally:
        cnn.get_layer("c1").trainable = True


@pytest.mark.parametrize(
    ("params", "size"),
    [({"n_steps": "auto", "max_steps": 8}, SIZE), ({"noise_tunnel": {"nt_samples": 2}}, SIZE), ({}, SIZE + 4)],
    ids=["auto steps", "noise tunnel", "bicubic resize"],
)
def test_what_it_does_not_cover_runs_captum_on_the_torch_bridge(
    cnn: keras.Model, params: dict[str, Any], size: int
) -> None:
    pre = xb.Preprocess.inception(SIZE)
    if not params:  # a resize that is not bilinear
        pre, params = xb.Preprocess(size=(SIZE, SIZE), scale="symmetric", layout="NHWC", interpolation="bicubic"), {}
    e = xb.explain(cnn, random_images((1, size, size, 3)), IG, 0, preprocess=pre, **{"n_steps": 4, **params})
    assert "TensorFlow" not in e.library_version and e.library == "captum"
    assert e.attributions.shape == (1, 1, size, size) and np.abs(e.attributions).max() > 0


def test_invalid_values_get_captums_errors(cnn: keras.Model, images: np.ndarray) -> None:
    pre = xb.Preprocess.inception(SIZE)
    with pytest.raises(xb.ParameterError, match="n_steps: expected an integer >= 1, got 0"):
        xb.explain(cnn, images, IG, 0, preprocess=pre, n_steps=0)
    with pytest.raises(xb.ParameterError, match="unknown parameter"):
        xb.explain(cnn, images, IG, 0, preprocess=pre, steps=4)


def test_two_threads_on_one_model_match_single_threaded(cnn: keras.Model, images: np.ndarray) -> None:
    pre = xb.Preprocess.inception(SIZE)
    runs = [("top1", {"n_steps": 6}), ([2, 0], {"n_steps": 5, "baselines": "random"})]
    alone = [xb.explain(cnn, images, IG, t, preprocess=pre, **p) for t, p in runs]
    got: dict[int, Any] = {}

    def run(i: int) -> None:
        targets, params = runs[i]
        got[i] = xb.explain(cnn, images, IG, targets, preprocess=pre, **params)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, single in enumerate(alone):
        np.testing.assert_array_equal(got[i].attributions, single.attributions)
        np.testing.assert_array_equal(got[i].scores, single.scores)


def test_no_torch_is_imported(tmp_path: Path) -> None:
    """A fresh process: the Keras model's IG (and its predictions) never import torch."""
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np, keras
        import xai_bridge as xb
        keras.utils.set_random_seed(0)
        inp = keras.Input((12, 12, 3))
        conv = keras.layers.Conv2D(3, 3, activation="relu")(inp)
        model = keras.Model(inp, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(conv)))
        images = np.random.default_rng(0).integers(0, 256, size=(2, 12, 12, 3), dtype=np.uint8)
        sal = xb.explain(model, images, "captum.Saliency", targets=1, preprocess=xb.Preprocess.inception(12))
        assert "TensorFlow" in sal.library_version and sal.attributions.max() > 0
        e = xb.explain(model, images, "captum.IntegratedGradients", preprocess=xb.Preprocess.inception(12), n_steps=8)
        gap = e.scores - e.base_scores
        print(json.dumps({
            "torch": "torch" in sys.modules,
            "library": e.library_version,
            "delta": float(np.abs(e.attributions.sum(axis=(2, 3)) - gap - e.extras["convergence_delta"]).max()),
            "gap": float(np.abs(gap).max()),
        }))
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["torch"] is False, "import torch happened on the Keras IG path"
    assert "TensorFlow" in got["library"] and got["gap"] > 0 and got["delta"] <= 1e-4 * got["gap"]


def test_grey_model_equals_captum_on_the_torch_bridge(images: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    keras.utils.set_random_seed(1)
    inp = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(3, 3, padding="same", activation="tanh")(inp)
    grey = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(conv)))
    pre = xb.Preprocess(scale="unit", channels=1, mean=(0.5,), std=(0.25,))
    mine = xb.explain(grey, images, IG, 1, preprocess=pre, n_steps=6)
    through_torch(monkeypatch)
    theirs = xb.explain(grey, images, IG, 1, preprocess=pre, n_steps=6)
    assert "TensorFlow" in mine.library_version and mine.raw is not None and theirs.raw is not None
    assert_close(mine.raw, theirs.raw)


@pytest.mark.parametrize("params", [{}, {"abs": False}])
def test_tensorflow_saliency_equals_captum_on_the_torch_bridge(
    cnn: keras.Model, images: np.ndarray, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pre, targets = xb.Preprocess.caffe(SIZE), [[0, 2], [1, 1]]  # explicit targets: scores from the score tap
    mine = xb.explain(cnn, images, "captum.Saliency", targets, preprocess=pre, **params)
    through_torch(monkeypatch)
    theirs = xb.explain(cnn, images, "captum.Saliency", targets, preprocess=pre, **params)
    assert "TensorFlow" in mine.library_version and "TensorFlow" not in theirs.library_version
    assert mine.raw is not None and theirs.raw is not None
    assert_close(mine.raw, theirs.raw)
    assert (mine.raw < 0).any() == (params.get("abs") is False)
    np.testing.assert_allclose(mine.scores, theirs.scores, rtol=1e-5, atol=1e-6)
    assert mine.params == theirs.params and mine.n_model_evals == theirs.n_model_evals
