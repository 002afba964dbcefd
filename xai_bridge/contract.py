"""The backend contract: the one call between :func:`xai_bridge.explain` and every method's implementation.

A backend is a callable ``backend(request: ExplainRequest) -> BackendResult``.
The request carries uint8 NHWC images, resolved ``(N, T)`` targets and the
user's keyword parameters; the result carries ``(N, T, H, W)`` maps at image
resolution. :func:`xai_bridge.explain` does the rest (loading images,
targets, timing, counting, building the :class:`~xai_bridge.Explanation`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .errors import MethodNotApplicableError, ParameterError
from .models import DifferentiableModel, Model

__all__ = [
    "Backend",
    "BackendResult",
    "ExplainRequest",
    "check_params",
    "library_version",
    "require_differentiable",
]


@dataclass(frozen=True)
class ExplainRequest:
    """What a backend is asked to explain.

    Attributes:
        method: the registered method name.
        model: the model (calls to ``predict`` are counted).
        images: uint8 ``(N, H, W, 3)``; backends must not modify it.
        targets: int64 ``(N, T)``.
        params: the user's keyword parameters for the method.
        seed: random seed (always set; backends must be deterministic given it).
        options: fixed options of the registered name (e.g. which captum class).
        n_outputs: the model's number of outputs when already known (targets
            were checked against it), so backends need no extra forward pass.
    """

    method: str
    model: Model
    images: np.ndarray
    targets: np.ndarray
    params: Mapping[str, Any]
    seed: int
    options: Mapping[str, Any] = field(default_factory=dict)
    n_outputs: int | None = None


@dataclass(frozen=True)
class BackendResult:
    """What a backend returns.

    Attributes:
        attributions: float ``(N, T, H, W)`` at image resolution, unnormalised.
        params: the effective parameters, defaults included (JSON-able).
        backend_version: the library's version.
        raw: optional ``(N, T, C, H, W)`` per-channel values.
        base_scores: optional ``(N, T)`` baseline / fully-masked outputs.
        n_model_evals: evaluations not made through ``model.predict`` (e.g.
            tensor forward passes of gradient methods); predict calls are
            counted by the caller and added.
        extras: arrays with leading ``(N, T)`` axes.
        uses_seed: whether the method is random (the seed is recorded if so).
        targets: for methods that define their own targets (e.g. Deep Feature
            Factorization: one per concept), int ``(N, T')``; then
            ``target_names`` and ``scores`` ``(N, T')`` must be given too and
            replace the requested targets.
        target_names: names of the backend's own targets.
        scores: scores of the backend's own targets.
    """

    attributions: np.ndarray
    params: Mapping[str, Any]
    backend_version: str
    raw: np.ndarray | None = None
    base_scores: np.ndarray | None = None
    n_model_evals: int = 0
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)
    uses_seed: bool = False
    targets: np.ndarray | None = None
    target_names: np.ndarray | None = None
    scores: np.ndarray | None = None


class Backend(Protocol):
    """A registered method implementation."""

    def __call__(self, request: ExplainRequest) -> BackendResult:  # noqa: D102
        ...


def check_params(method: str, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``params`` over ``defaults``; unknown names raise listing the valid ones."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ParameterError(
            f"{method}: unknown parameter(s) {unknown}; valid parameters are {sorted(defaults) or 'none'}",
            valid=tuple(sorted(defaults)),
        )
    return {**defaults, **params}


def require_differentiable(request: ExplainRequest, working: str = "") -> DifferentiableModel:
    """Return the request's model if it is differentiable, else raise naming what works."""
    model = request.model
    if isinstance(model, DifferentiableModel) and hasattr(model, "pixel_module"):
        return model
    hint = f" Methods that work on any model: {working}." if working else ""
    raise MethodNotApplicableError(
        f"model: {request.method} needs gradients, but {type(model).__name__} is not a torch model; wrap a "
        f"torch nn.Module with TorchModel(module, preprocess=...).{hint}"
    )


@functools.cache
def library_version(distribution: str) -> str:
    """Installed version of ``distribution`` (e.g. ``"grad-cam"``), read once per process.

    Reading package metadata parses files (milliseconds), too slow to repeat
    around every explanation.
    """
    from importlib.metadata import version

    return version(distribution)
