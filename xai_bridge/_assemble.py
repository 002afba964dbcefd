"""A backend's result checked against the contract and made into an Explanation, with names and probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .contract import BackendResult
from .explanation import Explanation
from .models import CountingModel, OutputKind, softmax
from .registry import MethodSpec

__all__ = ["assemble", "target_names", "target_probability", "with_probability"]


def assemble(
    spec: MethodSpec,
    result: BackendResult,
    batch: np.ndarray,
    targets: np.ndarray,
    names: np.ndarray,
    scores: np.ndarray | None,
    counted: CountingModel,
    seconds: float,
    seed: int,
) -> Explanation:
    """Check a backend's result against the contract and build the Explanation."""
    attributions = np.asarray(result.attributions)
    if result.targets is not None:  # the method defines its own targets (Deep Feature Factorization's concepts)
        if result.target_names is None or result.scores is None:
            raise RuntimeError(f"backend {spec.name!r} returned its own targets without target_names and scores")
        out_targets, out_names, out_scores = np.asarray(result.targets), result.target_names, result.scores
    else:
        if scores is None:
            raise RuntimeError(f"no scores for {spec.name!r}: explain_many computes them when the method does not")
        out_targets, out_names, out_scores = targets, names, scores
    expected = (*out_targets.shape, *batch.shape[1:3])
    if attributions.shape != expected:
        raise RuntimeError(f"backend {spec.name!r} returned maps of shape {attributions.shape}, expected {expected}")
    return Explanation(
        attributions=attributions,
        images=batch,
        targets=out_targets,
        target_names=out_names,
        scores=out_scores,
        raw=result.raw,
        base_scores=result.base_scores,
        extras=result.extras,
        method=spec.name,
        library=spec.name.split(".", 1)[0],
        library_version=result.backend_version,
        params=result.params,
        seed=int(seed) if result.uses_seed else None,
        n_model_evals=counted.count + int(result.n_model_evals),
        seconds=seconds,
    )


def target_names(targets: np.ndarray, class_names: Sequence[str] | None) -> np.ndarray:
    if class_names is None:
        return targets.astype(str)
    names = np.asarray(list(class_names), dtype=str)
    return names[targets]


def target_probability(model: Any, predicted: np.ndarray | None, targets: np.ndarray) -> tuple[np.ndarray, str] | None:
    """``(N, T)`` probabilities of the targets when the prediction pass gives them, and what made them.

    What made them: ``"softmax"`` of a logits model's outputs (computed here),
    ``"sigmoid"`` where the adapter's ``activation`` says the model's outputs
    are independent sigmoids (a multi-label head: a softmax across them would
    make the classes compete), ``"softmax"`` where it applies one itself, and
    ``"model"`` for a model that outputs probabilities of its own.
    """
    kind = getattr(model, "output_kind", None)
    if predicted is None or kind not in (OutputKind.LOGITS, OutputKind.PROBABILITIES):
        return None
    if kind is OutputKind.LOGITS:
        probs, source = softmax(np.asarray(predicted, np.float64), axis=1), "softmax"
    else:
        activation = getattr(model, "activation", None)
        probs, source = predicted, activation if activation in ("sigmoid", "softmax") else "model"
    return np.take_along_axis(np.asarray(probs, np.float32), targets, axis=1), source


def with_probability(exp: Explanation, probability: tuple[np.ndarray, str] | None) -> Explanation:
    """Add the targets' probabilities and what made them to ``extras`` (not for methods that chose their own targets).

    ``extras["probability"]`` holds the values, ``extras["probability_from"]``
    ``"softmax"``, ``"sigmoid"`` or ``"model"`` for each (the views say "sigmoid").
    """
    if probability is None or exp.targets.shape != probability[0].shape or "probability" in exp.extras:
        return exp
    values, source = probability
    return replace(exp, extras={**exp.extras, "probability": values, "probability_from": np.full(values.shape, source)})
