"""Keras 3 models on the TensorFlow backend: gradients by TensorFlow, parity with hand-written tape code.

A small functional CNN with a skip connection (so a CAM at ``c2`` is not on
every path), 24x24 inputs, ``Preprocess.inception`` ([-1, 1], NHWC).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None:
    pytest.skip("tensorflow and keras are not installed (pip install 'xai-bridge[keras]')", allow_module_level=True)

from xai_bridge.adapters.models.keras import KerasModel  # noqa: E402

from xai_bridge._load_order import triton_before_tensorflow  # noqa: E402

triton_before_tensorflow()  # TF 2.21 wheels crash a later `import triton` (torchvision imports it)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from helpers import random_images  # noqa: E402

import xai_bridge as xb  # noqa: E402
from xai_bridge.errors import MethodNotApplicableError  # noqa: E402

if keras.backend.backend() != "tensorflow":
    pytest.skip("these tests need KERAS_BACKEND=tensorflow", allow_module_level=True)

SIZE = 24
PRE = xb.Preprocess.inception(SIZE)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # torch's worker threads stall behind TensorFlow's spinning ones on 2 cores (20x slower small ops)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_cnn(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    c1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    c2 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c2")(c1)
    skip = keras.layers.Add(name="skip")([c1, c2])
    c3 = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="c3")(skip)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(c3)
    out = keras.layers.Dense(3, name="logits")(pooled)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    return make_cnn(0)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return random_images((2, SIZE, SIZE, 3))


def preprocess(pixels: tf.Tensor) -> tf.Tensor:
    return pixels * (2 / 255.0) - 1.0  # Keras "tf" mode: x / 127.5 - 1


def tape_gradient(model: keras.Model, pixels: np.ndarray, target: int) -> np.ndarray:
    """d score / d pixels (NHWC, pixel units), written as the Keras IG tutorial does."""
    x = tf.convert_to_tensor(pixels.astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = model(preprocess(x), training=False)[:, target]
    return tape.gradient(score, x).numpy()


def close(actual: np.ndarray, expected: np.ndarray, tol: float = 1e-5) -> None:
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def test_as_model_recognises_keras(cnn: keras.Model) -> None:
    model = xb.models.as_model(cnn, preprocess=xb.Preprocess(scale="symmetric"))
    assert isinstance(model, KerasModel)
    assert isinstance(model, xb.models.DifferentiableModel)
    assert model.preprocess.layout == "NHWC" and model.preprocess.size == (SIZE, SIZE)  # read from the input
    assert model.output_kind is xb.OutputKind.LOGITS
    with pytest.raises(TypeError, match="preprocess: a Keras model needs"):
        xb.models.as_model(cnn)


def test_keras_model_has_the_torch_models_surface(cnn: keras.Model, images: np.ndarray) -> None:
    """explaining(), inference() and fingerprint() come from the base TorchModel also uses."""
    from xai_bridge.adapters.models._differentiable import PixelModelBase

    from xai_bridge.errors import ParameterError

    model = KerasModel(cnn, PRE)
    assert isinstance(model, PixelModelBase) and isinstance(model, xb.models.DifferentiableModel)
    with pytest.raises(ParameterError, match="preprocess: a Keras model needs"):
        KerasModel(cnn, None)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="batch_size"):
        KerasModel(cnn, PRE, batch_size=0)
    with torch.no_grad(), model.explaining():
        assert torch.is_grad_enabled()  # gradient methods work inside a caller's no_grad block
        assert torch.equal(model.pixel_tensor(images), torch.from_numpy(images).permute(0, 3, 1, 2).float())
    with model.inference():
        inside = model.predict(images)
    np.testing.assert_array_equal(inside, model.predict(images))
    first = model.fingerprint()
    assert first == KerasModel(cnn, PRE).fingerprint()  # the same weights, another wrapper
    assert set(first) == set(xb.TorchModel(torch.nn.Linear(2, 2), xb.Preprocess()).fingerprint())
    assert first["class"].endswith("Functional") and first["values"] == sum(w.size for w in cnn.get_weights())
    other = KerasModel(make_cnn(1), PRE).fingerprint()
    assert other["shapes"] == first["shapes"] and other["weights"] != first["weights"]


def test_predict_matches_keras_and_prints_nothing(
    cnn: keras.Model, images: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    model = KerasModel(cnn, PRE)
    out = model.predict(images)
    expected = cnn(preprocess(tf.constant(images, tf.float32)), training=False).numpy()
    close(out, expected)
    with torch.no_grad():  # the gradient path (torch preprocessing + bridge) agrees
        close(model.pixel_module()(model.pixel_tensor(images)).numpy(), expected)
    assert capsys.readouterr().out == ""


def test_keras_presets_equal_keras_preprocess_input(images: np.ndarray) -> None:
    from keras.applications import resnet50, xception

    model = make_cnn(1)
    pixels = images.astype(np.float32)
    for pre, keras_pre in ((PRE, xception.preprocess_input), (xb.Preprocess.caffe(SIZE), resnet50.preprocess_input)):
        expected = model(keras_pre(pixels.copy()), training=False).numpy()
        close(KerasModel(model, pre).predict(images), expected)


def test_saliency_equals_gradient_tape(cnn: keras.Model, images: np.ndarray) -> None:
    e = xb.explain(cnn, images, "captum.Saliency", targets=2, preprocess=PRE)
    grad = tape_gradient(cnn, images, 2)
    close(e.raw[:, 0], np.abs(grad).transpose(0, 3, 1, 2))
    close(e.attributions[:, 0], np.abs(grad).sum(axis=-1))


@pytest.mark.parametrize("baselines", [0, [0, 128]])
def test_integrated_gradients_equal_tape_sum(cnn: keras.Model, images: np.ndarray, baselines: object) -> None:
    from captum.attr._utils.approximation_methods import approximation_parameters

    steps = 16
    e = xb.explain(
        cnn, images, "captum.IntegratedGradients", targets=1, preprocess=PRE, n_steps=steps, baselines=baselines
    )
    step_sizes, alphas = approximation_parameters("gausslegendre")
    x = images.astype(np.float32)
    expected = []
    for b in baselines if isinstance(baselines, list) else [baselines]:
        base = np.full_like(x, float(b))
        total = sum(
            w * tape_gradient(cnn, base + a * (x - base), 1)
            for w, a in zip(step_sizes(steps), alphas(steps), strict=True)
        )
        expected.append((x - base) * total)
    close(e.raw[:, 0], np.mean(expected, axis=0).transpose(0, 3, 1, 2))


def test_integrated_gradients_completeness(cnn: keras.Model, images: np.ndarray) -> None:
    e = xb.explain(cnn, images, "captum.IntegratedGradients", targets=0, preprocess=PRE, n_steps=128)
    model = KerasModel(cnn, PRE)
    gap = model.predict(images)[:, 0] - model.predict(np.zeros_like(images))[:, 0]
    assert np.all(np.abs(gap) > 1e-3)
    np.testing.assert_allclose(e.attributions[:, 0].sum(axis=(1, 2)), gap, rtol=0.05)


def classic_gradcam(model: keras.Model, images: np.ndarray, layer: str, target: int) -> np.ndarray:
    """The Keras Grad-CAM recipe: class-score gradient at the layer output, channel-mean weights, ReLU."""
    import cv2

    grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
    with tf.GradientTape() as tape:
        conv, preds = grad_model(preprocess(tf.constant(images, tf.float32)), training=False)
        score = preds[:, target]
    grads = tape.gradient(score, conv)
    weights = tf.reduce_mean(grads, axis=(1, 2))
    cam = tf.nn.relu(tf.reduce_sum(conv * weights[:, None, None, :], axis=-1)).numpy()
    return np.stack([cv2.resize(c, images.shape[2:0:-1]) for c in cam])  # bilinear, as pytorch-grad-cam


@pytest.mark.parametrize("layer", [None, "c2"])
def test_gradcam_equals_classic_keras_recipe(cnn: keras.Model, images: np.ndarray, layer: str | None) -> None:
    params = {} if layer is None else {"layer": layer}
    e = xb.explain(cnn, images, "gradcam.GradCAM", targets=1, preprocess=PRE, **params)
    chosen = layer or "c3"  # automatic: the last layer with a spatial 4-D output
    assert e.params["layer"] == chosen
    close(e.attributions[:, 0], classic_gradcam(cnn, images, chosen, 1))


@pytest.mark.parametrize(
    "method",
    ["gradcam.GradCAMPlusPlus", "gradcam.XGradCAM", "gradcam.LayerCAM", "gradcam.HiResCAM", "torchcam.GradCAM"],
)
def test_other_gradient_cams_run(cnn: keras.Model, images: np.ndarray, method: str) -> None:
    e = xb.explain(cnn, images, method, targets=1, preprocess=PRE)
    assert e.attributions.shape == (2, 1, SIZE, SIZE)
    assert np.isfinite(e.attributions).all() and e.attributions.max() > 0


def test_hirescam_equals_gradient_times_activation(cnn: keras.Model, images: np.ndarray) -> None:
    import cv2

    # at c2 the gradient varies over positions (at c3 it is constant: GAP then Dense)
    grad_model = keras.Model(cnn.inputs, [cnn.get_layer("c2").output, cnn.output])
    with tf.GradientTape() as tape:
        conv, preds = grad_model(preprocess(tf.constant(images, tf.float32)), training=False)
        score = preds[:, 0]
    cam = np.maximum((tape.gradient(score, conv) * conv).numpy().sum(axis=-1), 0)
    expected = np.stack([cv2.resize(c, (SIZE, SIZE)) for c in cam])
    e = xb.explain(cnn, images, "gradcam.HiResCAM", targets=0, preprocess=PRE, layer="c2")
    close(e.attributions[:, 0], expected)


def test_unknown_layer_names_candidates(cnn: keras.Model, images: np.ndarray) -> None:
    with pytest.raises(ValueError, match="Did you mean 'c2'"):
        xb.explain(cnn, images, "gradcam.GradCAM", preprocess=PRE, layer="c22")


def test_activation_changing_cam_is_refused(cnn: keras.Model, images: np.ndarray) -> None:
    with pytest.raises(MethodNotApplicableError, match="changed the output of Keras layer"):
        xb.explain(cnn, images[:1], "gradcam.AblationCAM", preprocess=PRE)


def test_gradient_family_and_lime_leave_the_model_unchanged(cnn: keras.Model, images: np.ndarray) -> None:
    cnn.get_layer("c1").trainable = False  # a user's frozen layer stays frozen, the others trainable
    weights = [w.copy() for w in cnn.get_weights()]
    flags = [layer.trainable for layer in cnn.layers]
    model = KerasModel(cnn, PRE, batch_size=4)
    runs = {
        "captum.InputXGradient": {},
        "captum.GradientShap": {"n_samples": 4},
        "captum.Saliency": {"noise_tunnel": {"nt_samples": 3}},
        "lime": {"num_samples": 64},
        "builtin.occlusion": {"window": 8, "stride": 8},
    }
    try:
        for method, params in runs.items():
            e = xb.explain(model, images, method, targets=1, **params)
            assert e.attributions.shape == (2, 1, SIZE, SIZE)
            assert np.isfinite(e.attributions).all() and np.abs(e.attributions).max() > 0
        assert [layer.trainable for layer in cnn.layers] == flags
        assert all(np.array_equal(a, b) for a, b in zip(weights, cnn.get_weights(), strict=True))
    finally:
        cnn.get_layer("c1").trainable = True


def test_keras_torch_backend_in_a_subprocess(tmp_path: Path) -> None:
    """KERAS_BACKEND=torch: gradients through the model's own autograd graph; Saliency and Grad-CAM vs torch."""
    script = textwrap.dedent(
        """
        import json, os
        import numpy as np, torch
        torch.set_num_threads(1)
        import keras
        import xai_bridge as xb
        keras.utils.set_random_seed(0)
        inp = keras.Input((16, 16, 3))
        c1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
        c2 = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="c2")(c1)
        out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(c2))
        model = keras.Model(inp, out)
        images = random_images((2, 16, 16, 3))
        pre = xb.Preprocess.inception(16)
        x = torch.tensor(images, dtype=torch.float32, requires_grad=True)
        model(x * (2 / 255) - 1)[:, 1].sum().backward()
        sal = xb.explain(model, images, "captum.Saliency", targets=1, preprocess=pre)
        grad_model = keras.Model(model.inputs, [model.get_layer("c2").output, model.output])
        conv, preds = grad_model(torch.tensor(images, dtype=torch.float32) * (2 / 255) - 1)
        grads = torch.autograd.grad(preds[:, 1].sum(), conv)[0]
        cam = torch.relu((conv * grads.mean(dim=(1, 2), keepdim=True)).sum(-1)).detach().numpy()
        e = xb.explain(model, images, "gradcam.GradCAM", targets=1, preprocess=pre)
        print(json.dumps({
            "backend": keras.backend.backend(),
            "saliency": float(np.abs(sal.attributions[:, 0] - x.grad.abs().sum(-1).numpy()).max()),
            "saliency_scale": float(x.grad.abs().max()),
            "layer": e.params["layer"],
            "cam_h": int(cam.shape[1]),
            "cam": float(np.abs(e.attributions[:, 0] - cam).max()),  # 16x16 layer output: no resize
            "cam_scale": float(np.abs(cam).max()),
        }))
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["backend"] == "torch" and got["layer"] == "c2" and got["cam_h"] == 16
    assert got["saliency"] <= 1e-5 * got["saliency_scale"]
    assert got["cam_scale"] > 0 and got["cam"] <= 1e-5 * got["cam_scale"]


# ------------------------------------------------------------------------- issue 28: hostile Keras models


def test_unbuilt_sequential_is_refused_and_left_unbuilt() -> None:
    model = keras.Sequential([keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    with pytest.raises(xb.ModelInputError, match=r"model.build\(") as err:
        xb.as_model(model, preprocess=PRE)
    assert "\n" not in str(err.value)
    assert not model.built and not model.weights  # never built at a shape xai-bridge chose


def test_two_outputs_are_refused_with_the_fix() -> None:
    inp = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inp)
    model = keras.Model(inp, [keras.layers.Dense(3)(pooled), keras.layers.Dense(2)(pooled)])
    with pytest.raises(MethodNotApplicableError, match=r"keras.Model\(model.inputs, model.outputs\[0\]\)") as err:
        xb.as_model(model, preprocess=PRE)
    assert "\n" not in str(err.value)


def test_grey_keras_model_gets_grey_pixels(images: np.ndarray) -> None:
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c")(inp)
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(conv)))
    wrapped = KerasModel(model, PRE)
    assert wrapped.preprocess.channels == 1
    grey = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    want = np.asarray(model(preprocess(grey[..., None]), training=False))
    np.testing.assert_allclose(wrapped.predict(images), want, atol=1e-4)
    sal = xb.explain(model, images, "captum.Saliency", preprocess=PRE, targets=0)
    assert np.isfinite(sal.attributions).all() and np.abs(sal.attributions).max() > 0


def test_gradient_chunk_follows_the_memory_budget(cnn: keras.Model) -> None:
    from xai_bridge.adapters.models._keras_module import gradient_chunk

    big = keras.applications.Xception(weights=None)
    assert gradient_chunk(big, 512) == 1  # one image's eager tape is ~400 MiB
    assert gradient_chunk(big, 4096) > gradient_chunk(big, 1024) >= 2
    assert gradient_chunk(cnn, 512) == 256  # tiny models: chunks as large as allowed


def test_keras_gradients_in_chunks_equal_one_tape_and_halve_on_oom(cnn: keras.Model, images: np.ndarray) -> None:
    model = KerasModel(cnn, PRE)
    engine = model.module._engine
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().requires_grad_(True)
    engine.chunk = 1  # one image per tape, as the Keras tutorial's loop
    model.pixel_module()(x)[:, 1].sum().backward()
    assert x.grad is not None
    want = np.stack([tape_gradient(cnn, images[i : i + 1].astype(np.float32), 1)[0] for i in range(len(images))])
    np.testing.assert_allclose(x.grad.permute(0, 2, 3, 1).numpy(), want, rtol=1e-4, atol=1e-6)

    calls: list[int] = []
    real = engine.chunked

    def flaky(n: int, work: Any) -> list[Any]:
        def once(a: int, b: int) -> Any:
            calls.append(b - a)
            if b - a > 1:
                raise tf.errors.ResourceExhaustedError(None, None, "OOM")
            return work(a, b)

        return real(n, once)

    engine.chunk, engine.chunked = 2, flaky
    x.grad = None
    model.pixel_module()(x)[:, 1].sum().backward()
    assert engine.chunk == 1 and calls[:3] == [2, 1, 1]
    np.testing.assert_allclose(x.grad.permute(0, 2, 3, 1).numpy(), want, rtol=1e-4, atol=1e-6)


def test_class_names_not_naming_the_outputs_are_refused_at_once(cnn: keras.Model) -> None:
    with pytest.raises(xb.ModelInputError, match=r"class_names: expected 3 names .* got 2") as err:
        KerasModel(cnn, PRE, class_names=["cat", "dog"])
    assert "\n" not in str(err.value)
