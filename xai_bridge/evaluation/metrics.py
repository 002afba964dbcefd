"""Evaluate explanations: faithfulness, localisation, complexity and sanity checks.

:func:`evaluate` scores a list of :class:`~xai_bridge.Explanation` of the same
model and images with several metrics and returns one tidy
:class:`pandas.DataFrame` row per (method, metric, image, target)::

    import xai_bridge as xb
    from xai_bridge.evaluation.metrics import evaluate, Deletion

    exps = [xb.explain(model, imgs, m) for m in ("gradcam.GradCAM", "rise")]
    df = evaluate(model, exps, ("deletion", "insertion", "sparseness"))
    df.pivot_table(index="method", columns="metric", values="value")

Where a library implements a metric, it is routed there (our arrays adapted
to its contract):

========================  =====================================================
metric                    implementation
========================  =====================================================
``deletion/insertion``    own, batched numpy through ``model.predict`` (see :class:`Deletion`)
``road_morf/road_lerf``   pytorch-grad-cam ``ROAD{Most,Least}RelevantFirstAverage``
``pointing_game``         Quantus ``PointingGame``
``sparseness``            Quantus ``Sparseness``
``complexity``            Quantus ``Complexity``
``faithfulness_corr``     Quantus ``FaithfulnessCorrelation``
``random_logit``          Quantus ``RandomLogit`` (explanations re-run by :func:`xai_bridge.explain`)
``randomisation``         own (see :class:`Randomisation`)
========================  =====================================================

Metrics that perturb the input only need ``model.predict``: they work for
black boxes, NHWC array models and caption models alike. The libraries that
want a torch module get :class:`_PredictModule`, a tiny ``nn.Module`` whose
forward rounds the float ``(N, 3, H, W)`` pixels in [0, 255] back to uint8
NHWC images and calls ``model.predict`` (so every evaluation is counted).

Only numpy and Pillow are imported here; pandas, scipy, torch, Quantus and
pytorch-grad-cam load inside the functions that use them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge.errors import ParameterError
from xai_bridge.explanation import Explanation
from xai_bridge.models import CountingModel, as_model, explaining
from xai_bridge.progress import ProgressArg, holding, note, session, stage

from ._curves import Baseline, _deletion, perturbation_curve
from ._quantus import _faithfulness, _quantus_no_model, _random_logit, explain_func_for
from ._quiet import quiet_tensorflow
from ._randomisation import _randomisation, randomised_copy
from ._regions import Box, _regions, boxes_to_masks
from ._road import _road
from ._settings import (
    _METRIC_TYPES,
    METRICS,
    ROAD,
    Complexity,
    Deletion,
    FaithfulnessCorrelation,
    Insertion,
    Metric,
    PointingGame,
    Randomisation,
    RandomLogit,
    Sparseness,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = [
    "COLUMNS",
    "METRICS",
    "ROAD",
    "Baseline",
    "Box",
    "Complexity",
    "Deletion",
    "FaithfulnessCorrelation",
    "Insertion",
    "Metric",
    "PointingGame",
    "RandomLogit",
    "Randomisation",
    "Sparseness",
    "boxes_to_masks",
    "estimate_evaluations",
    "evaluate",
    "explain_func_for",
    "perturbation_curve",
    "randomised_copy",
]

#: Columns of the DataFrame returned by :func:`evaluate`.
COLUMNS = ("method", "metric", "image", "target", "value", "n_model_evals", "seconds")


def _resolve_metric(metric: Any, steps: int | None, baseline: Any) -> Any:
    if isinstance(metric, str):
        key = metric.lower().replace("-", "_")
        if key == "road":
            raise ParameterError("metrics: 'road' is two metrics; pass 'road_morf' and/or 'road_lerf'")
        if key not in METRICS:
            raise ParameterError(f"metrics: unknown metric {metric!r}; valid names are {sorted(METRICS)}")
        metric = METRICS[key]()
        if isinstance(metric, Deletion):
            kwargs: dict[str, Any] = {}
            if steps is not None:
                kwargs["steps"] = steps
            if baseline is not None:
                kwargs["baseline"] = baseline
            metric = replace(metric, **kwargs) if kwargs else metric
        return metric
    if type(metric) not in (*_METRIC_TYPES, Insertion):
        raise ParameterError(
            f"metrics: expected metric names or xai_bridge.evaluation.metrics dataclasses, got {metric!r}"
        )
    return metric


# ---------------------------------------------------------------- evaluate
def evaluate(
    model: Any,
    explanations: Explanation | Sequence[Explanation],
    metrics: Sequence[str | Metric] | str | Metric = ("deletion", "insertion"),
    *,
    boxes: Any = None,
    masks: Any = None,
    seed: int = 0,
    steps: int | None = None,
    baseline: Baseline | str | None = None,
    progress: ProgressArg = "auto",
) -> pandas.DataFrame:
    """Score explanations of the same model with several metrics.

    Args:
        model: the model the explanations were made for (anything
            :func:`~xai_bridge.as_model` accepts), or one model per
            explanation (caption explanations each have their own
            :class:`~xai_bridge.captions.CaptionScoreModel`).
        explanations: one Explanation or a list (e.g. one per method).
        metrics: names (see :data:`METRICS`) or metric dataclasses.
        boxes: for the pointing game: per image a :class:`Box`
            ``Box(x0, y0, x1, y1)`` (x is the column, y the row, in pixels,
            end exclusive; a plain 4-tuple is read in that order) or a list
            of boxes (any one counts).
        masks: for the pointing game: bool ``(N, H, W)`` or ``(N, T, H, W)``.
        seed: seed of every random step (noise, random subsets, random classes,
            re-initialisation); results are deterministic given it.
        steps: ``steps`` of deletion/insertion named by string.
        baseline: ``baseline`` of deletion/insertion named by string.
        progress: a bar moving per batch of model evaluations, labelled with the metric
            and method (True, False or ``"auto"``: in terminals and notebooks, after 2 s).

    Returns:
        DataFrame with columns :data:`COLUMNS`, one row per method, metric,
        image and target. ``n_model_evals`` counts single-image model
        evaluations (a metric's evaluations on one image are shared equally
        among that image's targets); ``seconds`` likewise. Metrics routed to
        Quantus give NaN for a constant map (it has no ranking; Quantus
        refuses all-zero maps).

    Raises:
        ValueError: unknown metric name, mismatched images, missing boxes/masks.
        MethodNotApplicableError: randomisation on a model without a torch module.
    """
    import pandas as pd

    exps, models = _subjects(model, explanations, seed)
    resolved = _resolved(metrics, steps, baseline)
    if not resolved:
        raise ParameterError("metrics: pass at least one metric")
    names = [m.name for m in resolved]
    if len(set(names)) != len(names):
        raise ParameterError(f"metrics: each metric may appear once, got {names}")
    with session(progress, "evaluate"), quiet_tensorflow():
        note(_estimate_line(exps, resolved))
        rows = _evaluate_all(exps, models, resolved, boxes, masks, seed)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["n_model_evals"] = frame["n_model_evals"].astype(float)
    return frame


def estimate_evaluations(
    explanations: Explanation | Sequence[Explanation],
    metrics: Sequence[str | Metric] | str | Metric = ("deletion", "insertion"),
    *,
    steps: int | None = None,
    baseline: Baseline | str | None = None,
) -> dict[str, int | None]:
    """The model evaluations :func:`evaluate` would make, per metric, without running anything.

    Each metric answers for itself (``metric.evaluations(exp)``), summed over
    the explanations; metrics that re-run the explanation's method (random
    logit, randomisation) ask the method's own estimate, None where it gives none.

    Example:
        >>> exp = xb.explain(model, images, "gradcam.GradCAM")  # doctest: +SKIP
        >>> estimate_evaluations(exp, ("deletion", "faithfulness_corr"), steps=20)  # doctest: +SKIP
        {'deletion': 21, 'faithfulness_corr': 101}
    """
    exps = [explanations] if isinstance(explanations, Explanation) else list(explanations)
    estimate: dict[str, int | None] = {}
    for metric in _resolved(metrics, steps, baseline):
        counts = [metric.evaluations(exp) for exp in exps]
        estimate[metric.name] = None if None in counts else sum(c for c in counts if c is not None)
    return estimate


def _resolved(metrics: Sequence[str | Metric] | str | Metric, steps: int | None, baseline: Any) -> list[Any]:
    """One metric or a sequence of them (names or dataclasses), each resolved with ``steps`` and ``baseline``."""
    metric_list = [metrics] if isinstance(metrics, (str, *_METRIC_TYPES)) else metrics
    return [_resolve_metric(m, steps, baseline) for m in metric_list]


def _estimate_line(exps: Sequence[Explanation], resolved: Sequence[Any]) -> str:
    """The line shown before evaluate runs: model evaluations per metric and in all."""
    estimate = estimate_evaluations(exps, resolved)
    parts = [f"{name} {'?' if count is None else count}" for name, count in estimate.items()]
    known = sum(c for c in estimate.values() if c is not None)
    return f"evaluate: about {known} model evaluations ({', '.join(parts)})"


def _subjects(model: Any, explanations: Any, seed: Any) -> tuple[list[Explanation], list[Any]]:
    """:func:`evaluate`'s explanations as a list and one model for each, after checking them and the seed."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed: expected a non-negative integer, got {seed!r}")
    exps = [explanations] if isinstance(explanations, Explanation) else list(explanations)
    if not exps or not all(isinstance(e, Explanation) for e in exps):
        raise ParameterError("explanations: expected an Explanation or a non-empty list of them")
    if not isinstance(model, (list, tuple)):
        return exps, [as_model(model)] * len(exps)
    if len(model) != len(exps):
        raise ParameterError(f"model: got {len(model)} models for {len(exps)} explanations; pass one, or one each")
    return exps, [as_model(m) for m in model]


def _evaluate_all(
    exps: list[Explanation], models: list[Any], resolved: list[Any], boxes: Any, masks: Any, seed: int
) -> list[dict[str, Any]]:
    """The rows of :func:`evaluate`: every explanation, metric, image and target."""
    rows: list[dict[str, Any]] = []
    for exp, mdl in zip(exps, models, strict=False):
        with explaining(mdl):  # concurrent runs on one model take turns (see models.explaining)
            rows += _evaluate_one(exp, mdl, resolved, boxes, masks, seed)
    return rows


def _evaluate_one(
    exp: Explanation, mdl: Any, resolved: Sequence[Any], boxes: Any, masks: Any, seed: int
) -> list[dict[str, Any]]:
    """The rows of every metric on one Explanation."""
    rows: list[dict[str, Any]] = []
    region = None
    if any(isinstance(m, PointingGame) for m in resolved):
        region = _regions(exp, boxes, masks)
    for metric in resolved:
        stage(f"{metric.name} {exp.method}", metric.evaluations(exp))
        counted = CountingModel(mdl)
        for n in range(exp.n_images):
            one = exp[n]
            before = counted.count
            start = time.perf_counter()
            with holding():  # a metric re-running explain counts into the metric's stage
                values = _run(metric, counted, one, region[n : n + 1] if region is not None else None, seed)
            seconds = time.perf_counter() - start
            evals = counted.count - before
            t_count = one.n_targets
            for t in range(t_count):
                rows.append(
                    {
                        "method": exp.method,
                        "metric": metric.name,
                        "image": n,
                        "target": int(exp.targets[n, t]),
                        "value": float(values[t]),
                        "n_model_evals": evals / t_count,
                        "seconds": seconds / t_count,
                    }
                )
    return rows


def _run(metric: Any, model: CountingModel, exp: Explanation, region: np.ndarray | None, seed: int) -> np.ndarray:
    """Values ``(T,)`` of one metric on a one-image explanation."""
    if isinstance(metric, Deletion):
        return _deletion(metric, model, exp)
    if isinstance(metric, ROAD):
        return _road(metric, model, exp, seed)
    if isinstance(metric, PointingGame):
        return _quantus_no_model("PointingGame", exp, region)
    if isinstance(metric, Sparseness):
        return _quantus_no_model("Sparseness", exp)
    if isinstance(metric, Complexity):
        return _quantus_no_model("Complexity", exp)
    if isinstance(metric, FaithfulnessCorrelation):
        return _faithfulness(metric, model, exp, seed)
    if isinstance(metric, RandomLogit):
        return _random_logit(metric, model, exp, seed)
    if isinstance(metric, Randomisation):
        return _randomisation(metric, model, exp, seed)
    raise ParameterError(f"metrics: unsupported metric {metric!r}")  # pragma: no cover
