"""``explain()``: the one entry point routing to every backend."""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np

from .backend import BackendResult, ExplainRequest
from .errors import MethodNotApplicableError
from .explanation import Explanation
from .images import Layout, load_images
from .models import CountingModel, DifferentiableModel, Preprocess, as_model
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
    preprocess: Preprocess | None = None,
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
        preprocess: declared preprocessing when ``model`` is not yet wrapped.
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
    preprocess: Preprocess | None = None,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
) -> dict[str, Explanation]:
    """Explain with several methods, sharing image loading and the prediction pass.

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
    outputs = wrapped.predict(batch)
    target_idx = resolve_targets(
        targets, len(batch), outputs if needs_predictions(targets) else None, wrapped.class_names, outputs.shape[1]
    )
    scores = np.take_along_axis(outputs, target_idx, axis=1)
    names_arr = _target_names(target_idx, wrapped.class_names)
    results: dict[str, Explanation] = {}
    for (spec, backend), params in loaded:
        counted = CountingModel(wrapped)
        request = ExplainRequest(
            method=spec.name,
            model=counted,
            images=batch,
            targets=target_idx,
            params=params,
            seed=int(seed),
            options=spec.options,
            n_outputs=int(outputs.shape[1]),
        )
        start = time.perf_counter()
        result: BackendResult = backend(request)
        seconds = time.perf_counter() - start
        attributions = np.asarray(result.attributions)
        own = result.targets is not None
        if own and (result.target_names is None or result.scores is None):
            raise RuntimeError(f"backend {spec.name!r} returned its own targets without target_names and scores")
        out_targets = np.asarray(result.targets) if own else target_idx
        expected = (*out_targets.shape, *batch.shape[1:3])
        if attributions.shape != expected:
            raise RuntimeError(f"backend {spec.name!r} returned maps of shape {attributions.shape}, expected {expected}")
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

