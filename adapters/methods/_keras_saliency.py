"""captum's Saliency computed in TensorFlow for Keras models: ``|d score / d pixels|`` without importing torch.

The same numbers as captum's ``Saliency`` on the torch bridge: the gradient
of each target's output with respect to the pixels (0-255, after the model's
preprocessing in TensorFlow, see :mod:`._keras_ig`), its absolute value
with ``abs=True``, one forward and backward pass per image and target, in
chunks of the model's batch size capped by the memory budget, each under one
eager non-persistent tape. ``noise_tunnel=`` and the resizes
:func:`~._keras_ig.covers` leaves out run captum on the torch bridge.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xai_bridge import progress
from xai_bridge._validate import flag
from xai_bridge.contract import Backend, BackendResult, ExplainRequest, check_params, library_version
from xai_bridge.errors import ParameterError

from ._keras_ig import covers, pixel_forward
from .captum._methods import GRADIENT_METHODS

__all__ = ["run_saliency"]


def run_saliency(request: ExplainRequest, fallback: Backend) -> BackendResult:
    """Saliency maps in TensorFlow where :func:`~._keras_ig.covers` says so, else ``fallback``."""
    params = check_params(request.method, request.params, {**GRADIENT_METHODS["Saliency"], "noise_tunnel": None})
    model: Any = request.model  # a counted KerasModel (covers() checks)
    images, targets = request.images, request.targets
    if not covers(model, images, params["noise_tunnel"]):
        return fallback(request)
    try:
        effective = {**params, "abs": flag("abs", params["abs"])}
    except ParameterError:
        return fallback(request)  # captum's path says what is wrong
    import tensorflow as tf  # type: ignore[import-untyped]

    forward = pixel_forward(model, tf)
    offer = getattr(model, "offer_scores", None)
    x = images.astype(np.float32)
    raw = np.zeros((*targets.shape, *x.shape[1:]), np.float32)
    batch = int(model.batch_size)

    def column(j: int, a: int, b: int) -> None:
        pixels = tf.constant(x[a:b])
        with tf.GradientTape() as tape:
            tape.watch(pixels)
            out = forward(pixels)
            score = tf.gather(out, tf.constant(targets[a:b, j]), batch_dims=1)
        grad = np.asarray(tape.gradient(score, pixels), np.float32)
        raw[a:b, j] = np.abs(grad) if effective["abs"] else grad
        if j == 0 and offer is not None:
            offer(images[a:b], np.asarray(out, np.float32))  # explain's score tap, as the bridge's forward offers it
        progress.tick(b - a)

    for start in range(0, len(x), batch):  # the model's batch size, then the memory budget's chunk
        stop = min(len(x), start + batch)
        for j in range(targets.shape[1]):
            model.runner.chunked(stop - start, lambda a, b, j=j, s=start: column(j, s + a, s + b))
    raw = raw.transpose(0, 1, 4, 2, 3).copy()
    return BackendResult(
        attributions=raw.sum(axis=2),
        raw=raw,
        params=effective,
        backend_version=f"{library_version('captum')}, its rule in TensorFlow {tf.__version__}",
        n_model_evals=int(targets.size),
    )
