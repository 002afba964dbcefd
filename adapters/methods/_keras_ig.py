"""captum's Integrated Gradients rule in TensorFlow for Keras models, and which calls a TensorFlow path takes.

``xb.explain(keras_model, images, "captum.IntegratedGradients")`` would run
captum on the torch bridge of :mod:`xai_bridge.adapters.models._keras_module`,
and importing torch alone costs more resident memory than a large Keras
model's gradient pass (issue 28). This backend computes the same numbers
without torch: captum's alphas and step sizes
(``captum.attr._utils.approximation_methods``, re-implemented with numpy),
the same baselines and rows as :mod:`.captum._ig` (every image, target and
baseline; the map is the mean over baselines), each path chunk under one
eager non-persistent ``tf.GradientTape`` released before the next (chunks of
``min(internal_batch_size, the model's memory-budget chunk)``, halved on
out-of-memory), and the same outputs: ``raw`` per channel, maps summed over
channels, ``multiply_by_inputs``, ``base_scores`` and the convergence delta.
The Explanation says so: ``library_version`` reads e.g.
``"0.9.0, its rule in TensorFlow 2.21.0"``.

Images of another size are resized bilinearly in TensorFlow
(``tf.image.resize``, antialiased as the torch bridge's ``F.interpolate``: the
two agree to ~1e-6 of the pixel range). What it does not cover goes to captum
on the torch bridge, unchanged: ``n_steps="auto"``, ``noise_tunnel=``,
shortest-edge resizes with a crop and bicubic or nearest resampling, invalid
values (captum's checks then say what is wrong).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from xai_bridge import progress
from xai_bridge._validate import choice, flag, int_at_least, int_or_default
from xai_bridge.contract import Backend, BackendResult, ExplainRequest, check_params, library_version
from xai_bridge.errors import ParameterError
from xai_bridge.preprocess import GREY_WEIGHTS, Preprocess
from xai_bridge.registry import MethodSpec

from ..models._keras_tf import flat
from .captum._baselines import describe_baselines, one_baseline
from .captum._methods import GRADIENT_METHODS, has_random

__all__ = ["RULES", "covers", "integration_rule", "pixel_forward", "tensorflow_backend"]

#: captum's integration rules (``captum.attr._utils.approximation_methods.SUPPORTED_METHODS``).
RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def tensorflow_backend(spec: MethodSpec, fallback: Backend) -> Backend | None:
    """The TensorFlow implementation of ``spec``'s method (falling back to ``fallback``), or None."""
    if spec.name == "captum.Saliency":
        from ._keras_saliency import run_saliency

        return functools.partial(run_saliency, fallback=fallback)
    if spec.name != "captum.IntegratedGradients":
        return None
    return functools.partial(_run, fallback=fallback)


def integration_rule(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(alphas, step_sizes)`` of captum's rule ``method`` with ``n_steps`` points, float64.

    Gauss-Legendre: numpy's nodes and weights on [-1, 1] mapped to [0, 1];
    Riemann rules: ``1 / n`` steps (halved at both ends for the trapezoid)
    at points that captum spaces with a float32 ``linspace``.
    """
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return 0.5 * (1 + nodes), 0.5 * weights
    n = n_steps
    steps = np.full(n, 1 / n)
    ends = {
        "riemann_trapezoid": (0.0, 1.0),
        "riemann_left": (0.0, 1 - 1 / n),
        "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n)),
        "riemann_right": (1 / n, 1.0),
    }[method]
    if method == "riemann_trapezoid":
        steps[0] /= 2
        steps[-1] /= 2
    return np.linspace(*ends, n, dtype=np.float32).astype(np.float64), steps


def _run(request: ExplainRequest, fallback: Backend) -> BackendResult:
    """IG in TensorFlow where :func:`_covered` says so, else ``fallback`` (captum on the torch bridge)."""
    params = check_params(
        request.method, request.params, {**GRADIENT_METHODS["IntegratedGradients"], "noise_tunnel": None}
    )
    model = request.model
    effective = _covered(params, model, request.images)
    if effective is None:
        return fallback(request)
    import tensorflow as tf  # type: ignore[import-untyped]

    rng = np.random.default_rng(request.seed)
    specs = params["baselines"] if isinstance(params["baselines"], list) else [params["baselines"]]
    if not specs:
        return fallback(request)  # captum's path says what is wrong
    images = request.images
    bases = [
        np.stack([one_baseline(s, img, rng, i) for i, img in enumerate(images)]).transpose(0, 2, 3, 1) for s in specs
    ]
    x = images.astype(np.float32)
    run = _Path(model, effective, tf)
    outputs = run.outputs(x)  # the images through the same TensorFlow preprocessing as the path
    offer = getattr(model, "offer_scores", None)
    if offer is not None:
        offer(images, outputs)  # explain's score tap, as the torch bridge's forward offers it
    fx = np.take_along_axis(outputs, request.targets, axis=1)
    fb = np.stack([np.take_along_axis(run.outputs(b), request.targets, axis=1) for b in bases])  # (K, N, T)
    raw, delta = run.integrate(x, bases, request.targets, fx, fb)
    return BackendResult(
        attributions=raw.sum(axis=2),
        raw=raw,
        params=effective,
        backend_version=f"{library_version('captum')}, its rule in TensorFlow {tf.__version__}",
        base_scores=fb.mean(axis=0).astype(np.float32),
        n_model_evals=run.evaluations,
        extras={"convergence_delta": delta},
        uses_seed=has_random(params["baselines"]),
    )


def covers(model: Any, images: np.ndarray, noise_tunnel: Any) -> bool:
    """Whether a TensorFlow path runs on ``model``: Keras on TensorFlow, no noise tunnel, a bilinear resize at most."""
    pre = getattr(model, "preprocess", None)
    if getattr(model, "runner", None) is None or not isinstance(pre, Preprocess) or noise_tunnel is not None:
        return False
    resized = pre.size is not None and tuple(pre.size) != tuple(images.shape[1:3])
    # a shortest-edge resize and crop, bicubic or nearest resampling: the torch bridge's own resampling
    return pre.resize is None and not (resized and (pre.interpolation or "bilinear") != "bilinear")


def pixel_forward(model: Any, tf: Any) -> Any:
    """The model's :class:`_PixelForward`, one per model so that its compiled form is traced once."""
    return model.memo.setdefault("tensorflow_pixel_forward", _PixelForward(model, tf))


def _covered(params: Mapping[str, Any], model: Any, images: np.ndarray) -> dict[str, Any] | None:
    """The effective params (as captum's path records them) where this backend computes the call, else None."""
    if not covers(model, images, params["noise_tunnel"]):
        return None
    try:
        effective = {
            **params,
            "n_steps": int_at_least("n_steps", params["n_steps"], 1),
            "method": choice("method", params["method"], RULES),
            "internal_batch_size": int_or_default(
                "internal_batch_size", params["internal_batch_size"], model.batch_size
            ),
            "multiply_by_inputs": flag("multiply_by_inputs", params["multiply_by_inputs"]),
            "baselines": describe_baselines(params["baselines"]),
        }
    except ParameterError:
        return None  # captum's path raises the same error, or handles "auto"
    if effective["method"] != "gausslegendre" and effective["n_steps"] < 2:
        return None  # captum asserts n > 1 for Riemann rules
    del effective["tolerance"], effective["max_steps"]  # only n_steps="auto" uses them
    return effective


class _Path:
    """Forward passes and path gradients of one run: the model's preprocessing in TensorFlow, chunked tapes."""

    def __init__(self, model: Any, params: Mapping[str, Any], tf: Any) -> None:
        self.tf, self.params, self.runner = tf, params, model.runner
        self.forward = pixel_forward(model, tf)
        self.batch = int(params["internal_batch_size"])
        self.evaluations = 0  # forward passes not made through predict

    def outputs(self, pixels: np.ndarray) -> np.ndarray:
        """The model's outputs on float pixels ``(N, H, W, 3)``, compiled, ``internal_batch_size`` at a time."""
        tf = self.tf
        compiled = self.runner.compiled(self.forward, tf.zeros((1, *pixels.shape[1:]), tf.float32))
        parts = []
        for start in range(0, len(pixels), self.batch):
            parts.append(np.asarray(compiled(tf.constant(pixels[start : start + self.batch])), np.float32))
            self._count(len(parts[-1]))
        return np.concatenate(parts)

    def integrate(
        self, x: np.ndarray, bases: list[np.ndarray], targets: np.ndarray, fx: np.ndarray, fb: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw maps ``(N, T, 3, H, W)`` (mean over baselines) and convergence deltas ``(N, T)`` (mean of the rows')."""
        n, t = targets.shape
        k = len(bases)
        alphas, steps = integration_rule(str(self.params["method"]), int(self.params["n_steps"]))
        ii, jj, kk = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(t), np.arange(k), indexing="ij"))
        totals = np.zeros((len(ii), *x.shape[1:]), np.float32)  # sum over steps of step size x gradient, per row
        pairs = [(r, s) for r in range(len(ii)) for s in range(len(alphas))]  # every (row, step): one path image
        for start in range(0, len(pairs), self.batch):  # captum's internal_batch_size, then the memory budget's chunk
            block = pairs[start : start + self.batch]

            def work(a: int, b: int, block: list[tuple[int, int]] = block) -> None:
                self._gradients(block[a:b], x, bases, targets, (ii, jj, kk), (alphas, steps), totals)

            self.runner.chunked(len(block), work)
        raw = np.zeros((n, t, *x.shape[1:]), np.float32)
        row_delta = np.zeros(len(ii), np.float64)
        for r in range(len(ii)):
            i, j, b = ii[r], jj[r], kk[r]
            attr = totals[r] * (x[i] - bases[b][i]) if self.params["multiply_by_inputs"] else totals[r]
            raw[i, j] += attr / np.float32(k)
            row_delta[r] = attr.astype(np.float64).sum() - float(np.float32(fx[i, j] - fb[b, i, j]))
        delta = row_delta.reshape(n, t, k).mean(axis=2).astype(np.float32)
        return raw.transpose(0, 1, 4, 2, 3).copy(), delta

    def _gradients(
        self,
        chunk: list[tuple[int, int]],
        x: np.ndarray,
        bases: list[np.ndarray],
        targets: np.ndarray,
        rows: tuple[np.ndarray, np.ndarray, np.ndarray],
        rule: tuple[np.ndarray, np.ndarray],
        totals: np.ndarray,
    ) -> None:
        """One eager, non-persistent tape over ``chunk``'s path images; their weighted gradients go into ``totals``."""
        tf = self.tf
        ii, jj, kk = rows
        alphas, steps = rule
        r = np.array([p[0] for p in chunk])
        s = np.array([p[1] for p in chunk])
        start = np.stack([bases[kk[q]][ii[q]] for q in r])
        diff = x[ii[r]] - start
        path = tf.constant(start + alphas[s].astype(np.float32)[:, None, None, None] * diff)
        with tf.GradientTape() as tape:
            tape.watch(path)
            score = tf.gather(self.forward(path), tf.constant(targets[ii[r], jj[r]]), batch_dims=1)
        grad = np.asarray(tape.gradient(score, path), np.float32) * steps[s].astype(np.float32)[:, None, None, None]
        del tape
        for q in np.unique(r):
            totals[q] += grad[r == q].sum(axis=0)
        self._count(len(chunk))

    def _count(self, n: int) -> None:
        self.evaluations += n
        progress.tick(n)


class _PixelForward:
    """[0, 255] NHWC float pixels -> the model's preprocessing in TensorFlow -> its float32 outputs."""

    def __init__(self, model: Any, tf: Any) -> None:
        self.tf, self.keras_model, self.pre = tf, model.keras_model, model.preprocess

    def __call__(self, pixels: Any, training: bool = False) -> Any:
        (out,) = flat(self.keras_model(self.prepare(pixels), training=training))
        return self.tf.cast(out, self.tf.float32)

    def prepare(self, pixels: Any) -> Any:
        """The declared preprocessing, as the torch bridge's ``PixelModule.prepare`` (a bilinear resize at most)."""
        tf, pre = self.tf, self.pre
        x = pixels
        if pre.size is not None and tuple(x.shape[1:3]) != tuple(pre.size):  # bilinear, antialiased as torch's
            x = tf.image.resize(x, pre.size, method="bilinear", antialias=pre.antialias)
        if pre.channels == 1:
            x = tf.reduce_sum(x * tf.constant(GREY_WEIGHTS, tf.float32), axis=-1, keepdims=True)
        factor, offset = pre.scale.factor_offset
        x = x * float(factor) + float(offset)
        if pre.channel_order == "BGR" and pre.channels == 3:
            x = tf.reverse(x, axis=[-1])
        if pre.mean is not None or pre.std is not None:
            mean = tf.constant(pre.mean or (0.0,) * pre.channels, tf.float32)
            std = tf.constant(pre.std or (1.0,) * pre.channels, tf.float32)
            x = (x - mean) / std
        return x if pre.layout == "NHWC" else tf.transpose(x, (0, 3, 1, 2))
