"""The plan of a run: each method resolved, its budget mapped, its fit to the model checked, before any model work."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .contract import BackendResult, ExplainRequest
from .errors import MethodNotApplicableError, ParameterError
from .models import DifferentiableModel
from .registry import MethodSpec, Registry

__all__ = ["Step", "check_applicable", "checked_budget", "make_plan", "model_backends", "refuse_budget", "with_budget"]


@dataclass(frozen=True)
class Step:
    """One method of a run: the name the user gave, its spec, backend and parameters.

    ``refused_budget`` is the ``budget=`` that a method without a budget
    parameter was given: the run reports it with the method's own parameters.
    ``own`` says that the model computes the method itself (see :func:`model_backends`).
    """

    given: str
    spec: MethodSpec
    backend: Callable[[ExplainRequest], BackendResult]
    params: dict[str, Any]
    refused_budget: int | None = None
    own: bool = False


def checked_budget(budget: Any) -> int | None:
    """``budget`` as a positive int, or None."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ParameterError(f"budget: expected a positive number of model evaluations per image, got {budget!r}")
    return int(budget)


def with_budget(spec: MethodSpec, params: Mapping[str, Any], budget: int | None) -> dict[str, Any]:
    """``params`` with the generic ``budget`` mapped onto the method's own budget parameter.

    Args:
        spec: the method's spec; ``spec.budget`` names its budget parameter.
        params: the method's own parameters as the user gave them.
        budget: model evaluations per image, or None to keep the method's default.

    Returns:
        A new dict; ``params`` is not modified.

    Raises:
        ParameterError: ``budget`` given together with the method's own budget
            parameter (one cost, two answers).
    """
    if budget is None or spec.budget is None:
        return dict(params)
    if spec.budget in params:
        raise ParameterError(
            f"budget: {spec.name} got both budget={budget} and its own {spec.budget}={params[spec.budget]!r}; "
            f"pass only one of them"
        )
    return {**params, spec.budget: int(budget)}


def make_plan(
    registry: Registry, methods: Sequence[str | tuple[str, Mapping[str, Any]]], budget: int | None = None
) -> list[Step]:
    """Resolve every method (failing fast on unknown or missing libraries) and refuse duplicates."""
    if isinstance(methods, str):
        methods = [methods]
    steps = []
    for entry in methods:
        if isinstance(entry, str):
            name, params = entry, {}
        elif isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], Mapping):
            name, params = entry[0], dict(entry[1])
        else:
            raise ParameterError(f"methods: expected method names or (name, params) pairs, got {entry!r}")
        if not all(isinstance(key, str) for key in params):
            raise ParameterError(f"{name}: parameter names must be strings, got {sorted(map(repr, params))}")
        spec, backend = registry.load(name)
        refused = budget if spec.budget is None else None
        steps.append(Step(name, spec, backend, with_budget(spec, params, budget), refused))
    if not steps:
        raise ParameterError("methods: pass at least one method name")
    canonical = [step.spec.name for step in steps]
    if len(set(canonical)) != len(canonical):
        raise ParameterError(f"methods: each method may appear once, got {[s.given for s in steps]}")
    return steps


def model_backends(plan: Sequence[Step], model: Any) -> list[Step]:
    """The plan with the model's own implementation of a method where it offers one.

    A model may compute a method in its own framework (a Keras model's
    Integrated Gradients in TensorFlow, without importing torch):
    ``model.own_backend(spec, backend)`` returns that backend, which falls
    back to the library's ``backend`` for what it does not cover, or None.
    """
    own = getattr(model, "own_backend", None)
    if own is None:
        return list(plan)
    steps = []
    for step in plan:
        backend = own(step.spec, step.backend)
        steps.append(step if backend is None else replace(step, backend=backend, own=True))
    return steps


def check_applicable(registry: Registry, plan: Sequence[Step], model: Any) -> None:
    """Refuse gradient methods on models without gradients and detector methods on other models, in one line."""
    for step in plan:
        if step.spec.model_kind == "detector" and not hasattr(model, "detector"):
            raise MethodNotApplicableError(
                f"{step.spec.name}: explains detections of an object detector, got {type(model).__name__}; "
                "use builtin.RISE for a classifier, or xb.explain_detections(detector, images, method) for a detector"
            )
        if step.spec.needs_gradients and not step.own and not isinstance(model, DifferentiableModel):
            working = ", ".join(
                name
                for name in registry.available(installed_only=True, family="perturbation")
                if registry.spec(name).model_kind == "any"
            )
            raise MethodNotApplicableError(
                f"method: {step.spec.name!r} needs gradients, but the model is a {type(model).__name__}; wrap a "
                f"torch nn.Module with TorchModel(module, preprocess=...), or use a method that works on any "
                f"model: {working}"
            )


def refuse_budget(step: Step, request: ExplainRequest) -> None:
    """Raise for ``budget=`` on a method without a budget, naming the parameters that set its cost.

    The method's own parameter check lists its valid names (``ParameterError.valid``):
    it runs first in every backend, so this probe does no model work.
    """
    valid: tuple[str, ...] = ()
    try:
        step.backend(replace(request, params={**step.params, "budget": step.refused_budget}))
    except ParameterError as exc:
        valid = exc.valid
    own = f"its own parameters {list(valid)}" if valid else "its own parameters"
    raise ParameterError(
        f"budget: {step.spec.name} has no evaluation budget, its cost is set by {own}; "
        f"drop budget={step.refused_budget} and set those instead",
        valid=valid,
    )
