"""``explain()`` and ``explain_many()``: the one entry point, planning, running and assembling every method."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any, overload

import numpy as np

from . import progress as progress_bars
from ._assemble import assemble, target_names, target_probability, with_probability
from ._plan import Step, check_applicable, checked_budget, make_plan, model_backends, refuse_budget, with_budget
from ._subjects import NOT_SPECIAL, explain_many_other_subject, explain_other_subject
from .batching import ScoreTap
from .contract import BackendResult, ExplainRequest
from .errors import ParameterError, UnknownMethodError
from .explanation import Explanation
from .images import Layout, _load_images
from .many import Explanations, PerImage
from .models import CountingModel, Preprocess, as_model, explaining
from .registry import Registry, default_registry
from .targets import TargetSpec, needs_predictions, resolve_targets

__all__ = ["explain", "explain_many", "with_budget"]

#: What explain() advises for images of different sizes (it takes no ``size=``, unlike load_images).
MIXED_SIZES_FIX = (
    "one call explains one size: resize them first with xb.load_images(images, size=(height, width)) and pass "
    "the result, or explain each size in its own call (xai_bridge.datasets.explain_dataset takes a folder)"
)


@overload
def explain(
    model: Any,
    images: np.ndarray,
    method: str = "builtin.Saliency",
    /,
    targets: TargetSpec = "top1",
    *,
    budget: int | None = None,
    seed: int = 0,
    preprocess: Preprocess | Any | None = None,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    progress: progress_bars.ProgressArg = "auto",
    **params: Any,
) -> Explanation: ...


@overload
def explain(
    model: Any,
    images: Any,
    method: str = "builtin.Saliency",
    /,
    targets: TargetSpec = "top1",
    *,
    budget: int | None = None,
    seed: int = 0,
    preprocess: Preprocess | Any | None = None,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    progress: progress_bars.ProgressArg = "auto",
    **params: Any,
) -> Explanation | PerImage: ...


def explain(
    model: Any,
    images: Any,
    method: str = "builtin.Saliency",
    /,
    targets: TargetSpec = "top1",
    *,
    budget: int | None = None,
    seed: int = 0,
    preprocess: Preprocess | Any | None = None,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    progress: progress_bars.ProgressArg = "auto",
    **params: Any,
) -> Explanation | PerImage:
    """Explain ``model`` on ``images`` with one method.

    Args:
        model: a :class:`~xai_bridge.models.Model`, a torch module (with
            ``preprocess``) or a callable (see :func:`~xai_bridge.models.as_model`).
        images: paths, PIL images, arrays or tensors (see :func:`~xai_bridge.load_images`).
        method: a registered name, e.g. ``"gradcam.GradCAM"``; see
            :func:`~xai_bridge.available_methods`. Positional, so that a method's
            own ``method=`` parameter (Integrated Gradients' integration rule)
            reaches the method; ``method="<registered name>"`` as a keyword
            still names the method when it is not given positionally.
        targets: ``"top1"``, ``top_k(k)``, an index, a class name or one entry per image.
            For a detector the default is every detection above ``score_threshold=``
            (``xb.Box(...)`` picks one); for a segmentation model the largest predicted
            class (``xb.Region(mask, label)`` a region of your own).
        budget: model evaluations per image, mapped onto the method's own budget
            parameter (:attr:`~xai_bridge.registry.MethodSpec.budget`: ``max_evals``
            for shap.Partition, ``num_samples`` for lime.Lime, ``n_masks`` for
            builtin.RISE...), so one word sets the cost of any sampling method.
            None keeps the method's default. A method whose cost is fixed by
            other parameters refuses it, as does giving both ``budget`` and the
            method's own parameter.
        seed: random seed; every method is deterministic given it.
        preprocess: declared preprocessing when ``model`` is not yet wrapped: a
            :class:`~xai_bridge.models.Preprocess`, a torchvision weights enum or a
            transformers image processor (Hugging Face and timm models bring their own).
        layout: layout of array inputs when ambiguous.
        registry: method table (default: the built-in one).
        progress: a progress bar moving per batch of model evaluations, with the
            method's name and an ETA: True, False, or ``"auto"`` (in terminals and
            notebooks, once the call has run for 2 s).
        **params: the method's own parameters (unknown names raise).

    Returns:
        The :class:`~xai_bridge.Explanation`. For an object detector (a
        torchvision, Hugging Face, ONNX or YOLO detector, ``xb.DetectionModel``), a
        list of them, one per image with one target per detection, as
        :func:`~xai_bridge.detection.explain_detections` returns; for a
        segmentation model one Explanation with one target per region.
    """
    registry = registry or default_registry()
    method, params = _named_method(registry, method, params)
    special = explain_other_subject(
        model, images, method, params, targets, budget, seed, preprocess, layout, registry, progress
    )
    if special is not NOT_SPECIAL:  # an object detector or a segmentation model: one target per detection or region
        return special  # type: ignore[no-any-return]
    step = [(method, params)]
    kwargs: dict[str, Any] = {
        "seed": seed,
        "preprocess": preprocess,
        "layout": layout,
        "registry": registry,
        "progress": progress,
    }
    [result] = explain_many(model, images, step, targets, budget=budget, **kwargs).values()
    return result


def _named_method(registry: Registry, method: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``explain(model, images, method="gradcam.GradCAM")``: a ``method=`` keyword naming a method names it.

    It stays a parameter of the method (Integrated Gradients' integration
    rule) when the method was given positionally or it names no method.
    """
    if method == "builtin.Saliency" and isinstance(params.get("method"), str):
        try:
            return registry.spec(params["method"]).name, {k: v for k, v in params.items() if k != "method"}
        except UnknownMethodError:
            pass
    return method, params


def explain_many(
    model: Any,
    images: Any,
    methods: Sequence[str | tuple[str, Mapping[str, Any]]],
    /,
    targets: TargetSpec = "top1",
    *,
    budget: int | None = None,
    seed: int = 0,
    preprocess: Preprocess | Any | None = None,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    progress: progress_bars.ProgressArg = "auto",
) -> Explanations:
    """Explain with several methods, sharing image loading and the prediction pass.

    The prediction pass runs once, before the methods, when ``targets`` need
    the model's outputs (``"top1"``, :func:`~xai_bridge.top_k`) or the model's
    output count is not known yet. With explicit targets each explanation's
    ``scores`` are read from the method's own evaluation of the unperturbed
    image (see :class:`~xai_bridge.batching.ScoreTap`), and a prediction pass
    runs (once) only for a method that never evaluates it.

    Args:
        model: as in :func:`explain`.
        images: as in :func:`explain`.
        methods: names, or ``(name, params)`` pairs.
        targets: as in :func:`explain`; resolved once for all methods.
        budget: as in :func:`explain`, for every method (each maps it onto its
            own budget parameter).
        seed: as in :func:`explain`.
        preprocess: as in :func:`explain`.
        layout: as in :func:`explain`.
        registry: as in :func:`explain`.
        progress: as in :func:`explain`; one bar, relabelled per method.

    Returns:
        ``{method name as given: Explanation}`` in the order given (an
        :class:`~xai_bridge.many.Explanations`, a ``dict`` that shows a
        comparison grid and a table in notebooks); each
        Explanation's ``method`` is the canonical name. Where the model's
        outputs are logits or probabilities and the targets came from a
        prediction pass, ``extras["probability"]`` holds each target's probability.
        For an object detector each method's result is a list, one Explanation
        per image, as :func:`explain` returns; for a segmentation model one
        Explanation with one target per region.
    """
    special = explain_many_other_subject(
        model, images, methods, targets, budget, seed, preprocess, layout, registry, progress
    )
    if special is not NOT_SPECIAL:  # a detector (a list per method) or a segmentation model (an Explanation)
        return special  # type: ignore[no-any-return]
    with progress_bars.session(progress, "explain"):
        return Explanations(_explain_many(model, images, methods, targets, budget, seed, preprocess, layout, registry))


def _explain_many(
    model: Any,
    images: Any,
    methods: Sequence[str | tuple[str, Mapping[str, Any]]],
    targets: TargetSpec,
    budget: int | None,
    seed: int,
    preprocess: Preprocess | Any | None,
    layout: Layout | str | None,
    registry: Registry | None,
) -> dict[str, Explanation] | dict[str, PerImage]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed: expected a non-negative integer, got {seed!r}")
    registry = registry or default_registry()
    plan = make_plan(registry, methods, checked_budget(budget))
    wrapped = as_model(model, preprocess=preprocess)
    plan = model_backends(plan, wrapped)  # e.g. a Keras model's IG in TensorFlow
    check_applicable(registry, plan, wrapped)
    batch = _load(images, layout, wrapped)
    with explaining(wrapped):  # concurrent runs on one model take turns (see models.explaining)
        if isinstance(batch, list):
            return _run_each(plan, wrapped, batch, targets, int(seed))
        return _run_all(plan, wrapped, batch, targets, int(seed))


def _load(images: Any, layout: Layout | str | None, model: Any) -> np.ndarray | list[np.ndarray]:
    """The images as one batch, or one ``(1, H, W, 3)`` batch per image where sizes differ and the model resizes.

    A model whose preprocessing resizes (a :class:`Preprocess` with a
    ``size``: Hugging Face processors, CLIP, timm and torchvision weights
    transforms, ``Preprocess(size=...)``) takes any size, so each image is
    explained at its own; any other model keeps the one-size error.
    """
    pre = getattr(model, "preprocess", None)
    if not (isinstance(images, (list, tuple)) and len(images) > 1 and isinstance(pre, Preprocess) and pre.size):
        return _load_images(images, layout=layout, fix=MIXED_SIZES_FIX)
    parts = [_load_images(item, layout=layout) for item in images]
    if len({part.shape[1:3] for part in parts}) == 1:
        return np.concatenate(parts, axis=0)
    return [part[i : i + 1] for part in parts for i in range(len(part))]


def _run_each(
    plan: list[Step], wrapped: Any, singles: list[np.ndarray], targets: TargetSpec, seed: int
) -> dict[str, PerImage]:
    """Images of different sizes: each explained alone, exactly as a call of its own would (its targets, its seed)."""
    results: dict[str, PerImage] = {step.given: PerImage() for step in plan}
    per_image = _targets_per_image(targets, len(singles))
    for i, single in enumerate(singles):
        progress_bars.set_prefix(f"image {i + 1}/{len(singles)} ")
        for name, exp in _run_all(plan, wrapped, single, per_image[i], seed).items():
            results[name].append(exp)
    progress_bars.set_prefix("")
    return results


def _targets_per_image(targets: TargetSpec, n: int) -> list[TargetSpec]:
    """``targets`` split into one spec per image: an entry per image becomes that image's, any other spec holds for all."""
    if isinstance(targets, np.ndarray) and targets.ndim > 0:
        if len(targets) != n:
            raise ParameterError(f"targets: got {len(targets)} rows for {n} images; pass one row per image")
        return [targets[i : i + 1] for i in range(n)]
    if isinstance(targets, (list, tuple)):
        if len(targets) != n:
            raise ParameterError(
                f"targets: got {len(targets)} entries for {n} images; pass one entry per image, "
                "a single int/name for all, 'top1' or top_k(k)"
            )
        return [[entry] for entry in targets]
    return [targets] * n


def _run_all(
    plan: list[Step], wrapped: Any, batch: np.ndarray, targets: TargetSpec, seed: int
) -> dict[str, Explanation]:
    """Predict if needed, resolve the targets once and run every step of the plan."""
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
    names = target_names(target_idx, wrapped.class_names)
    probability = target_probability(wrapped, predicted, target_idx)
    results: dict[str, Explanation] = {}
    for i, step in enumerate(plan):
        label = step.spec.name if len(plan) == 1 else f"{step.spec.name} [{i + 1}/{len(plan)}]"
        n_img, n_tgt = target_idx.shape
        expected = progress_bars.expected_evals(step.spec.name, step.params, n_img, n_tgt, batch.shape[1:3])
        progress_bars.stage(label, expected)
        result, counted, seconds, scores = _run_one(step, wrapped, batch, target_idx, seed, n_outputs, shared)
        if scores is None and result.targets is None:
            shared = scores = np.take_along_axis(wrapped.predict(batch), target_idx, axis=1)
        results[step.given] = with_probability(
            assemble(step.spec, result, batch, target_idx, names, scores, counted, seconds, seed), probability
        )
    return results


def _run_one(
    step: Step,
    model: Any,
    batch: np.ndarray,
    targets: np.ndarray,
    seed: int,
    n_outputs: int,
    shared: np.ndarray | None,
) -> tuple[BackendResult, CountingModel, float, np.ndarray | None]:
    """Run one method; returns its result, the counted model, its seconds and the target scores seen."""
    tap = ScoreTap(batch) if shared is None else None
    pixel_tap = getattr(model, "tap_scores", None) if tap is not None else None
    counted = CountingModel(model, tap=tap if pixel_tap is None else None)
    request = ExplainRequest(
        method=step.spec.name,
        model=counted,
        images=batch,
        targets=targets,
        params=step.params,
        seed=seed,
        options=step.spec.options,
        n_outputs=n_outputs,
    )
    # methods that only call predict: one model guard for all their calls (see TorchModel.inference)
    inference = getattr(model, "inference", None) if not step.spec.needs_gradients else None
    start = time.perf_counter()
    if step.refused_budget is not None:
        refuse_budget(step, request)
    with pixel_tap(tap) if pixel_tap is not None else nullcontext(), inference() if inference else nullcontext():
        result: BackendResult = step.backend(request)
    seconds = time.perf_counter() - start
    return result, counted, seconds, shared if tap is None else tap.scores(targets)
