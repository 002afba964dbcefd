"""``explain()``: the one entry point routing to every backend."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from .backend import BackendResult, ExplainRequest
from .errors import MethodNotApplicableError
from .explanation import Explanation
from .images import Layout, load_images
from .models import CountingModel, DifferentiableModel, Preprocess, ScoreTap, as_model
from .registry import Registry, default_registry
from .targets import TargetSpec, needs_predictions, resolve_targets

__all__ = ["explain", "explain_many"]


def explain(
    model: Any,
    images: Any,
    method: str = "builtin.saliency",
    targets: TargetSpec = "top1",
    *,
    seed: int = 0,
    preprocess: Preprocess | Any | None = None,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    **params: Any,
) -> Explanation:
    """Explain ``model`` on ``images`` with one method.

    Args:
        model: a :class:`~xai_bridge.models.Model`, a torch module (with
            ``preprocess``) or a callable (see :func:`~xai_bridge.models.as_model`).
        images: paths, PIL images, arrays or tensors (see :func:`~xai_bridge.load_images`).
        method: a registered name, e.g. ``"gradcam.GradCAM"``; see
            :func:`~xai_bridge.available_methods`.
        targets: ``"top1"``, ``top_k(k)``, an index, a class name or one entry per image.
        seed: random seed; every method is deterministic given it.
        preprocess: declared preprocessing when ``model`` is not yet wrapped: a
            :class:`~xai_bridge.models.Preprocess`, a torchvision weights enum or a
            transformers image processor (Hugging Face and timm models bring their own).
        layout: layout of array inputs when ambiguous.
        registry: method table (default: the built-in one).
        **params: the method's own parameters (unknown names raise).

    Returns:
        The :class:`~xai_bridge.Explanation`.
    """
    return explain_many(
        model, images, [(method, params)], targets, seed=seed, preprocess=preprocess, layout=layout, registry=registry
    )[method]


def explain_many(
    model: Any,
    images: Any,
    methods: Sequence[str | tuple[str, Mapping[str, Any]]],
    targets: TargetSpec = "top1",
    *,
    seed: int = 0,
    preprocess: Preprocess | Any | None = None,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
) -> dict[str, Explanation]:
    """Explain with several methods, sharing image loading and the prediction pass.

    The prediction pass runs once, before the methods, when ``targets`` need
    the model's outputs (``"top1"``, :func:`~xai_bridge.top_k`) or the model's
    output count is not known yet. With explicit targets each explanation's
    ``scores`` are read from the method's own evaluation of the unperturbed
    image (see :class:`~xai_bridge.models.ScoreTap`), and a prediction pass
    runs (once) only for a method that never evaluates it.

    Args:
        model: as in :func:`explain`.
        images: as in :func:`explain`.
        methods: names, or ``(name, params)`` pairs.
        targets: as in :func:`explain`; resolved once for all methods.
        seed: as in :func:`explain`.
        preprocess: as in :func:`explain`.
        layout: as in :func:`explain`.
        registry: as in :func:`explain`.

    Returns:
        ``{method name: Explanation}`` in the order given.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    registry = registry or default_registry()
    plan = [(m, {}) if isinstance(m, str) else (m[0], dict(m[1])) for m in methods]
    if not plan:
        raise ValueError("methods: pass at least one method name")
    names = [name for name, _ in plan]
    if len(set(names)) != len(names):
        raise ValueError(f"methods: each method may appear once, got {names}")
    loaded = [(registry.load(name), params) for name, params in plan]  # fail fast on unknown/missing
    wrapped = as_model(model, preprocess=preprocess)
    for (spec, _), _params in loaded:
        if spec.needs_gradients and not isinstance(wrapped, DifferentiableModel):
            working = ", ".join(registry.available(installed_only=True, family="perturbation"))
            raise MethodNotApplicableError(
                f"method: {spec.name!r} needs gradients, but the model is a {type(wrapped).__name__}; wrap a "
                f"torch nn.Module with TorchModel(module, preprocess=...), or use a method that works on any "
                f"model: {working}"
            )
    batch = load_images(images, layout=layout)
    known = getattr(wrapped, "output_count", None)
    predicted: np.ndarray | None = None
    if needs_predictions(targets) or not isinstance(known, int):
        predicted = wrapped.predict(batch)
    n_outputs = int(predicted.shape[1]) if predicted is not None else int(known)  # type: ignore[arg-type]
    target_idx = resolve_targets(
        targets, len(batch), predicted if needs_predictions(targets) else None, wrapped.class_names, n_outputs
    )
    # With explicit targets the scores come from the image's own evaluation inside each method (a
    # ScoreTap); one shared prediction pass runs only for methods that never evaluate the image itself.
    shared = np.take_along_axis(predicted, target_idx, axis=1) if predicted is not None else None
    names_arr = _target_names(target_idx, wrapped.class_names)
    results: dict[str, Explanation] = {}
    for (spec, backend), params in loaded:
        tap = ScoreTap(batch) if shared is None else None
        pixel_tap = getattr(wrapped, "tap_scores", None) if tap is not None else None
        counted = CountingModel(wrapped, tap=tap if pixel_tap is None else None)
        request = ExplainRequest(
            method=spec.name,
            model=counted,
            images=batch,
            targets=target_idx,
            params=params,
            seed=int(seed),
            options=spec.options,
            n_outputs=n_outputs,
        )
        start = time.perf_counter()
        with pixel_tap(tap) if pixel_tap is not None else nullcontext():
            result: BackendResult = backend(request)
        seconds = time.perf_counter() - start
        scores = shared if tap is None else tap.scores(target_idx)
        if scores is None and result.targets is None:
            shared = scores = np.take_along_axis(wrapped.predict(batch), target_idx, axis=1)
        attributions = np.asarray(result.attributions)
        own = result.targets is not None
        if own and (result.target_names is None or result.scores is None):
            raise RuntimeError(f"backend {spec.name!r} returned its own targets without target_names and scores")
        out_targets = np.asarray(result.targets) if own else target_idx
        expected = (*out_targets.shape, *batch.shape[1:3])
        if attributions.shape != expected:
            raise RuntimeError(
                f"backend {spec.name!r} returned maps of shape {attributions.shape}, expected {expected}"
            )
        results[spec.name] = Explanation(
            attributions=attributions,
            images=batch,
            targets=out_targets,
            target_names=result.target_names if own else names_arr,
            scores=result.scores if own else scores,
            raw=result.raw,
            base_scores=result.base_scores,
            extras=result.extras,
            method=spec.name,
            backend=spec.name.split(".", 1)[0],
            backend_version=result.backend_version,
            params=result.params,
            seed=int(seed) if result.uses_seed else None,
            n_model_evals=counted.count + int(result.n_model_evals),
            seconds=seconds,
        )
    return results


def _target_names(targets: np.ndarray, class_names: Sequence[str] | None) -> np.ndarray:
    if class_names is None:
        return targets.astype(str)
    names = np.asarray(list(class_names), dtype=str)
    return names[targets]
