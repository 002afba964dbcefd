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

import ast
import copy
import enum
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image, ImageFilter

from xai_bridge._seeding import GLOBAL_RNG_LOCK, numpy_seeded
from xai_bridge.errors import MethodNotApplicableError, ParameterError
from xai_bridge.explanation import Explanation
from xai_bridge.models import CountingModel, DifferentiableModel, Model, OutputKind, as_model, explaining, softmax
from xai_bridge.progress import ProgressArg, session, stage

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
    "evaluate",
    "explain_func_for",
    "perturbation_curve",
    "randomised_copy",
]

#: Columns of the DataFrame returned by :func:`evaluate`.
COLUMNS = ("method", "metric", "image", "target", "value", "n_model_evals", "seconds")


class Baseline(str, enum.Enum):
    """What removed pixels become in deletion / insertion."""

    BLACK = "black"
    BLUR = "blur"


# ---------------------------------------------------------------- metrics
@dataclass(frozen=True)
class Deletion:
    """Deletion AUC (lower is better): remove the most relevant pixels first.

    Petsiuk et al., RISE (2018), https://arxiv.org/abs/1806.07421. At each
    fraction ``f`` of ``linspace(0, 1, steps + 1)`` the ``round(f * H * W)``
    most relevant pixels are replaced by the baseline; the AUC of the target's
    score over the fraction axis is taken by the trapezoid rule.

    Own implementation: Quantus' ``RegionPerturbation`` perturbs patches and
    reports the AOPC of score drops (not the RISE curve), and its
    ``PixelFlipping`` flips ``features_in_step`` features per step with a
    per-image constant baseline (``"black"`` is the image minimum, not 0),
    has no insertion counterpart and no blurred baseline, and makes one model
    call per step; here a map's whole curve (``steps + 1`` images) goes
    through ``model.predict`` in one batched call, with any model.

    Attributes:
        steps: number of fractions after 0 (``steps + 1`` evaluations per map).
        baseline: black pixels or a blurred copy of the image.
        blur_radius: Gaussian blur radius in pixels (``Baseline.BLUR``); None
            means ``max(H, W) / 20``.
        softmax: apply a softmax to the outputs first (for logits models).
    """

    steps: int = 20
    baseline: Baseline = Baseline.BLACK
    blur_radius: float | None = None
    softmax: bool = False
    name = "deletion"
    insertion = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "baseline", _enum(Baseline, self.baseline, "baseline"))
        if isinstance(self.steps, bool) or int(self.steps) < 1:
            raise ParameterError(f"steps: expected an integer >= 1, got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))


@dataclass(frozen=True)
class Insertion(Deletion):
    """Insertion AUC (higher is better): start from the baseline, insert the most relevant pixels first.

    Petsiuk et al., RISE (2018), https://arxiv.org/abs/1806.07421. Same
    settings and implementation as :class:`Deletion`.
    """

    name = "insertion"
    insertion = True


@dataclass(frozen=True)
class ROAD:
    """ROAD: remove and debias with noisy linear imputation (Rong et al. 2022, https://arxiv.org/abs/2202.00449).

    Routed to pytorch-grad-cam's ``ROADMostRelevantFirstAverage`` /
    ``ROADLeastRelevantFirstAverage``; the value is the change of the target's
    score (after - before) averaged over ``percentiles``. MoRF: lower (more
    negative) is better; LeRF: higher (closer to 0) is better. Maps are
    min-max scaled to [0, 1] first (grad-cam's contract for CAMs). The
    imputation noise uses torch's generator seeded with ``evaluate``'s seed
    (in a forked RNG state, so global state is untouched).

    Attributes:
        order: ``"morf"`` (most relevant first) or ``"lerf"``.
        percentiles: percent of pixels kept at each step (grad-cam's
            convention: MoRF at 80 keeps the 80% least relevant pixels and
            imputes the top 20%; LeRF at 20 keeps the 20% most relevant).
            Each percentile costs two model evaluations (original and imputed)
            and one sparse solve (about 3 s at 224x224).
        softmax: score softmax probabilities (for logits models).
    """

    order: str = "morf"
    percentiles: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
    softmax: bool = False

    def __post_init__(self) -> None:
        if self.order not in ("morf", "lerf"):
            raise ParameterError(f"order: expected 'morf' or 'lerf', got {self.order!r}")
        object.__setattr__(self, "percentiles", tuple(int(p) for p in self.percentiles))

    @property
    def name(self) -> str:
        """``road_morf`` or ``road_lerf``."""
        return f"road_{self.order}"


@dataclass(frozen=True)
class PointingGame:
    """Pointing game (Zhang et al. 2018, https://arxiv.org/abs/1608.00507): is the map's maximum inside the object?

    Routed to Quantus ``PointingGame``; needs ``boxes`` or ``masks`` in
    :func:`evaluate`. Value 1.0 for a hit, 0.0 for a miss.
    """

    name = "pointing_game"


@dataclass(frozen=True)
class Sparseness:
    """Gini index of the absolute map (Chalasani et al. 2020, https://arxiv.org/abs/1810.06583); higher is sparser.

    Routed to Quantus ``Sparseness`` (its defaults: absolute, max-normalised).
    """

    name = "sparseness"


@dataclass(frozen=True)
class Complexity:
    """Entropy of the absolute map's fractional contributions (Bhatt et al. 2020, https://arxiv.org/abs/2005.00631).

    Routed to Quantus ``Complexity`` (its defaults); lower is simpler.
    """

    name = "complexity"


@dataclass(frozen=True)
class FaithfulnessCorrelation:
    """Faithfulness correlation (Bhatt et al. 2020, https://arxiv.org/abs/2005.00631); higher is better.

    Routed to Quantus ``FaithfulnessCorrelation``: Pearson correlation between
    the sum of attributions of random pixel subsets and the score drop when
    they are set to the baseline. Quantus draws subsets from numpy's global
    generator; it is seeded with ``evaluate``'s seed and its state restored after.

    Attributes:
        nr_runs: number of random subsets.
        subset_size: pixels per subset.
        baseline: Quantus ``perturb_baseline`` (``"black"`` is the image minimum).
        softmax: score softmax probabilities (for logits models).
    """

    nr_runs: int = 100
    subset_size: int = 224
    baseline: str = "black"
    softmax: bool = False
    name = "faithfulness_corr"


@dataclass(frozen=True)
class RandomLogit:
    """Random logit test (Sixt et al. 2020, https://arxiv.org/abs/1912.09818); lower similarity is better.

    Routed to Quantus ``RandomLogit`` (SSIM between the map of the target and
    the map of a random other class, drawn with ``evaluate``'s seed). The
    other-class map is computed by :func:`xai_bridge.explain` with the
    explanation's method and params on the same model.

    Attributes:
        num_classes: classes to draw from; None means the model's output count.
    """

    num_classes: int | None = None
    name = "random_logit"


@dataclass(frozen=True)
class Randomisation:
    """Model-parameter randomisation sanity check (Adebayo et al. 2018, https://arxiv.org/abs/1810.03292).

    A deep copy of the user's torch module (never the module itself) gets the
    named layers re-initialised by their own ``reset_parameters`` under a
    torch generator seeded with ``evaluate``'s seed (forked RNG state, as
    Quantus' MPRT does); the copy is wrapped in a ``TorchModel`` with the same
    preprocessing, and the explanation is re-run with
    ``xai_bridge.explain(copy, exp.images, exp.method, targets=exp.targets,
    seed=exp.seed or 0, **params)``. The value is the Spearman rank
    correlation of the original and the new map: a method that passes the
    sanity check decorrelates (low value).

    Own implementation: Quantus' ``MPRT`` randomises every layer cascading
    from the top in its own order and calls an ``explain_func`` on raw
    tensors; here the layers are the user's choice and the maps are made by
    the very backend (and preprocessing) that made the explanation.

    ``exp.params`` may hold entries a backend added (effective defaults, a
    CAM's resolved layer name); they are passed back as they are, and if the
    backend refuses unknown names they are retried with only the names the
    backend lists as valid. Pass ``params`` to set them yourself.

    Attributes:
        layers: dotted names of submodules to re-initialise (with all their
            children); None means the last submodule that has parameters.
            An empty tuple randomises nothing (the value is then ~1).
        absolute: correlate absolute maps (Adebayo et al. report both).
        params: method parameters to use instead of ``exp.params``.
    """

    layers: tuple[str, ...] | None = None
    absolute: bool = False
    params: Mapping[str, Any] | None = None
    name = "randomisation"

    def __post_init__(self) -> None:
        if self.layers is not None:
            layers = (self.layers,) if isinstance(self.layers, str) else tuple(str(x) for x in self.layers)
            object.__setattr__(self, "layers", layers)


Metric = (
    Deletion
    | Insertion
    | ROAD
    | PointingGame
    | Sparseness
    | Complexity
    | FaithfulnessCorrelation
    | RandomLogit
    | Randomisation
)

#: Metric names accepted by :func:`evaluate` and the dataclass each builds.
METRICS: dict[str, Callable[[], Any]] = {
    "deletion": Deletion,
    "insertion": Insertion,
    "road_morf": lambda: ROAD("morf"),
    "road_lerf": lambda: ROAD("lerf"),
    "pointing_game": PointingGame,
    "sparseness": Sparseness,
    "complexity": Complexity,
    "faithfulness_corr": FaithfulnessCorrelation,
    "random_logit": RandomLogit,
    "randomisation": Randomisation,
}


def _enum(kind: type[enum.Enum], value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        valid = [m.value for m in kind]  # type: ignore[attr-defined]
        raise ParameterError(f"{name}: expected one of {valid}, got {value!r}") from None


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
    if not hasattr(metric, "name") or type(metric).__module__ != __name__:
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
        progress: a bar moving per batch of model evaluations, labelled with
            the metric and method (True, False or ``"auto"``: in terminals and
            notebooks, once the call has run for 2 s).

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

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed: expected a non-negative integer, got {seed!r}")
    exps = [explanations] if isinstance(explanations, Explanation) else list(explanations)
    if not exps or not all(isinstance(e, Explanation) for e in exps):
        raise ParameterError("explanations: expected an Explanation or a non-empty list of them")
    if isinstance(model, (list, tuple)):
        if len(model) != len(exps):
            raise ParameterError(f"model: got {len(model)} models for {len(exps)} explanations; pass one, or one each")
        models = [as_model(m) for m in model]
    else:
        models = [as_model(model)] * len(exps)
    metric_list = (
        [metrics]
        if isinstance(
            metrics,
            (
                str,
                Deletion,
                ROAD,
                PointingGame,
                Sparseness,
                Complexity,
                FaithfulnessCorrelation,
                RandomLogit,
                Randomisation,
            ),
        )
        else metrics
    )
    resolved = [_resolve_metric(m, steps, baseline) for m in metric_list]
    if not resolved:
        raise ParameterError("metrics: pass at least one metric")
    names = [m.name for m in resolved]
    if len(set(names)) != len(names):
        raise ParameterError(f"metrics: each metric may appear once, got {names}")
    with session(progress, "evaluate"):
        rows = _evaluate_all(exps, models, resolved, boxes, masks, seed)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["n_model_evals"] = frame["n_model_evals"].astype(float)
    return frame


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
        stage(f"{metric.name} {exp.method}")
        counted = CountingModel(mdl)
        for n in range(exp.n_images):
            one = exp[n]
            before = counted.count
            start = time.perf_counter()
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


# ----------------------------------------------------------- shared helpers
def _columns(model: Any, exp: Explanation) -> np.ndarray:
    """Output column of each target, ``(N, T)``.

    For caption models the targets are token ids but the outputs are one
    column per reference token, in order: column ``t`` for target ``t``.
    """
    inner = model.wrapped if isinstance(model, CountingModel) else model
    if hasattr(inner, "reference") and hasattr(inner, "captioner"):
        return np.tile(np.arange(exp.n_targets), (exp.n_images, 1))
    return np.asarray(exp.targets)


def _scores(outputs: np.ndarray, columns: np.ndarray | int, use_softmax: bool, model: Any) -> np.ndarray:
    if use_softmax and getattr(model, "output_kind", None) != OutputKind.PROBABILITIES:
        outputs = softmax(outputs, axis=1)
    return (
        outputs[:, columns]
        if np.ndim(columns) == 0
        else np.take_along_axis(outputs, np.asarray(columns)[:, None], 1)[:, 0]
    )


def _nchw(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)), dtype=np.float32)


def _predict_module(model: Any) -> Any:
    """A torch ``nn.Module`` (eval mode) whose forward calls ``model.predict``.

    It takes float ``(N, 3, H, W)`` pixels in [0, 255] (rounded and clipped to
    uint8 NHWC) and returns the model's outputs as a float tensor: the array
    contract Quantus and pytorch-grad-cam expect of a torch model.
    """
    import torch

    class _PredictModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

        def forward(self, x: Any) -> Any:
            arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
            images = np.clip(np.rint(np.transpose(arr, (0, 2, 3, 1))), 0, 255).astype(np.uint8)
            return torch.from_numpy(np.ascontiguousarray(model.predict(images), dtype=np.float32))

    return _PredictModule().eval()


# ------------------------------------------------------- deletion/insertion
def perturbation_curve(
    model: Model,
    image: np.ndarray,
    attribution: np.ndarray,
    columns: np.ndarray,
    metric: Deletion,
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion or insertion curves of one image for several maps.

    Args:
        model: the model (``predict`` only).
        image: uint8 ``(H, W, 3)``.
        attribution: ``(T, H, W)`` maps.
        columns: ``(T,)`` output column scored for each map.
        metric: :class:`Deletion` or :class:`Insertion` settings.

    Returns:
        ``fractions`` ``(steps + 1,)`` and ``scores`` ``(T, steps + 1)``; all
        ``T * (steps + 1)`` images go through ``model.predict`` at once (it batches).
    """
    h, w = image.shape[:2]
    fractions = np.linspace(0.0, 1.0, metric.steps + 1)
    if metric.baseline is Baseline.BLACK:
        base = np.zeros_like(image)
    else:
        radius = metric.blur_radius if metric.blur_radius is not None else max(h, w) / 20.0
        base = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))
    flat_img, flat_base = image.reshape(-1, 3), base.reshape(-1, 3)
    counts = np.rint(fractions * h * w).astype(int)
    batch = np.empty((len(attribution), len(fractions), h * w, 3), np.uint8)
    for t, amap in enumerate(np.asarray(attribution, np.float64)):
        order = np.argsort(-amap.reshape(-1), kind="stable")  # most relevant first; ties by position
        rank = np.empty(h * w, np.int64)
        rank[order] = np.arange(h * w)
        for s, k in enumerate(counts):
            chosen = (rank < k)[:, None]  # the k most relevant pixels
            if metric.insertion:
                batch[t, s] = np.where(chosen, flat_img, flat_base)
            else:
                batch[t, s] = np.where(chosen, flat_base, flat_img)
    outputs = model.predict(batch.reshape(-1, h, w, 3))
    cols = np.repeat(np.asarray(columns), len(fractions))
    scores = _scores(outputs, cols, metric.softmax, model).reshape(len(attribution), len(fractions))
    return fractions, scores


def _deletion(metric: Deletion, model: CountingModel, exp: Explanation) -> np.ndarray:
    fractions, scores = perturbation_curve(model, exp.images[0], exp.attributions[0], _columns(model, exp)[0], metric)
    return np.trapezoid(scores, fractions, axis=1)


# --------------------------------------------------------------- ROAD (grad-cam)
def _road(metric: ROAD, model: CountingModel, exp: Explanation, seed: int) -> np.ndarray:
    import torch
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    kind = ROADMostRelevantFirstAverage if metric.order == "morf" else ROADLeastRelevantFirstAverage
    use_softmax = metric.softmax and model.output_kind != OutputKind.PROBABILITIES
    target_cls = ClassifierOutputSoftmaxTarget if use_softmax else ClassifierOutputTarget
    module = _predict_module(model)
    x = torch.from_numpy(_nchw(exp.images))
    columns = _columns(model, exp)[0]
    values = np.empty(exp.n_targets)
    for t in range(exp.n_targets):
        cam = _minmax(exp.attributions[:, t])
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):  # the lock first: see _seeding
            torch.manual_seed(seed)
            out = kind(list(metric.percentiles))(x, cam, [target_cls(int(columns[t]))], module)
        values[t] = float(np.asarray(out).reshape(-1)[0])
    return values


def _minmax(maps: np.ndarray) -> np.ndarray:
    maps = np.asarray(maps, np.float32)
    lo = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)


# --------------------------------------------------------------- Quantus
def _quantus_a(exp: Explanation, t: int) -> np.ndarray:
    return np.ascontiguousarray(exp.attributions[:, t : t + 1], dtype=np.float32)  # (N, 1, H, W)


def _flat(exp: Explanation, t: int) -> bool:
    """A constant map has no ranking: Quantus refuses it, and the value is NaN."""
    a = exp.attributions[0, t]
    return bool(a.max() == a.min())


def _quantus_no_model(name: str, exp: Explanation, region: np.ndarray | None = None) -> np.ndarray:
    quantus = _quantus()

    x = _nchw(exp.images)
    values = np.empty(exp.n_targets)
    for t in range(exp.n_targets):
        if _flat(exp, t):
            values[t] = np.nan
            continue
        kwargs: dict[str, Any] = {}
        if region is not None:
            kwargs["s_batch"] = region[:, t : t + 1]
        metric = getattr(quantus, name)(disable_warnings=True)
        out = metric(model=None, x_batch=x, y_batch=exp.targets[:, t], a_batch=_quantus_a(exp, t), **kwargs)
        values[t] = float(np.asarray(out, dtype=np.float64).reshape(-1)[0])
    return values


def _faithfulness(metric: FaithfulnessCorrelation, model: CountingModel, exp: Explanation, seed: int) -> np.ndarray:
    quantus = _quantus()

    x = _nchw(exp.images)
    module = _predict_module(model)
    columns = _columns(model, exp)
    use_softmax = metric.softmax and model.output_kind != OutputKind.PROBABILITIES
    values = np.full(exp.n_targets, np.nan)
    for t in range(exp.n_targets):
        if _flat(exp, t):
            continue
        q = quantus.FaithfulnessCorrelation(
            nr_runs=metric.nr_runs,
            subset_size=metric.subset_size,
            perturb_baseline=metric.baseline,
            return_aggregate=False,
            disable_warnings=True,
        )
        with numpy_seeded(seed):
            out = q(
                model=module,
                x_batch=x,
                y_batch=columns[:, t],
                a_batch=_quantus_a(exp, t),
                softmax=use_softmax,
                channel_first=True,
            )
        values[t] = float(np.asarray(out, dtype=np.float64).reshape(-1)[0])
    return values


def _random_logit(metric: RandomLogit, model: CountingModel, exp: Explanation, seed: int) -> np.ndarray:
    quantus = _quantus()

    x = _nchw(exp.images)
    module = _predict_module(model)
    columns = _columns(model, exp)
    num_classes = metric.num_classes
    if num_classes is None:
        num_classes = int(model.predict(exp.images[:1]).shape[1])
    if num_classes < 2:
        raise ParameterError(f"num_classes: the random logit test needs >= 2 classes, got {num_classes}")
    explain_func = explain_func_for(model, exp, counter=model)
    values = np.full(exp.n_targets, np.nan)
    for t in range(exp.n_targets):
        if _flat(exp, t):
            continue
        q = quantus.RandomLogit(num_classes=num_classes, seed=seed, disable_warnings=True)
        with numpy_seeded(seed):
            out = q(
                model=module,
                x_batch=x,
                y_batch=columns[:, t],
                a_batch=_quantus_a(exp, t),
                explain_func=explain_func,
                channel_first=True,
            )
        values[t] = float(np.asarray(out, dtype=np.float64).reshape(-1)[0])
    return values


def explain_func_for(model: Any, exp: Explanation, counter: CountingModel | None = None) -> Callable[..., np.ndarray]:
    """A Quantus ``explain_func`` that re-runs ``exp``'s method on ``model`` via :func:`xai_bridge.explain`.

    Quantus calls it with its torch wrapper as ``model`` (ignored), float
    ``(N, 3, H, W)`` pixels in [0, 255] as ``inputs`` and ``(N,)`` ``targets``;
    it returns ``(N, 1, H, W)`` maps. Their evaluations are added to ``counter``.
    """
    inner = model.wrapped if isinstance(model, CountingModel) else model

    def explain_func(model: Any = None, inputs: Any = None, targets: Any = None, **_: Any) -> np.ndarray:
        images = np.clip(np.rint(np.transpose(np.asarray(inputs), (0, 2, 3, 1))), 0, 255).astype(np.uint8)
        tgt = [[int(v)] for v in np.asarray(targets).reshape(-1)]
        new = _explain_like(inner, exp, images, tgt)
        if counter is not None:
            counter.count += new.n_model_evals  # predict calls and the backend's own forward passes
        return np.asarray(new.attributions, np.float32)

    return explain_func


def _explain_like(
    model: Any, exp: Explanation, images: np.ndarray, targets: Any, params: Mapping[str, Any] | None = None
) -> Explanation:
    """Run ``exp.method`` again with its params; retry with the backend's valid names if some are refused."""
    from xai_bridge.routing import explain

    kwargs = dict(exp.params if params is None else params)
    seed = exp.seed or 0
    try:
        return explain(model, images, exp.method, targets=targets, seed=seed, **kwargs)
    except MethodNotApplicableError:
        raise
    except TypeError as exc:
        match = re.search(r"valid parameters are (\[.*?\]|none)", str(exc))
        if params is not None or match is None:
            raise
        valid = set() if match.group(1) == "none" else set(ast.literal_eval(match.group(1)))
        kept = {k: v for k, v in kwargs.items() if k in valid}
        return explain(model, images, exp.method, targets=targets, seed=seed, **kept)


# --------------------------------------------------------------- randomisation
def randomised_copy(model: DifferentiableModel, layers: Sequence[str] | None, seed: int) -> Any:
    """A ``TorchModel`` around a deep copy of ``model.module`` with ``layers`` re-initialised.

    Each named submodule (and its children) with a ``reset_parameters`` /
    ``reset_running_stats`` method is reset under ``torch.manual_seed(seed)``
    inside a forked RNG state; the user's module is never touched.

    Args:
        model: a :class:`~xai_bridge.models.DifferentiableModel` (e.g. ``TorchModel``).
        layers: dotted submodule names; None means the last submodule with parameters.
        seed: seed of the re-initialisation.

    Returns:
        The new ``TorchModel`` (same preprocessing, output kind, class names, batch size).
    """
    import torch

    from xai_bridge.adapters.models import TorchModel

    inner: Any = model.wrapped if isinstance(model, CountingModel) else model
    module = inner.module
    net = copy.deepcopy(module)
    named = dict(net.named_modules())
    if layers is None:
        with_params = [n for n, m in net.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
        if not with_params:
            raise ParameterError("layers: the module has no submodule with parameters to randomise")
        layers = (with_params[-1],)
    missing = [name for name in layers if name not in named]
    if missing:
        raise ParameterError(f"layers: no submodule named {missing}; some valid names: {[n for n in named if n][-10:]}")
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for name in layers:
            for sub in named[name].modules():
                reset = getattr(sub, "reset_parameters", None)
                if callable(reset):
                    reset()
                elif any(True for _ in sub.parameters(recurse=False)):
                    for p in sub.parameters(recurse=False):
                        p.normal_(0.0, 0.01)
    pixel = inner.pixel_module()
    return TorchModel(
        net,
        inner.preprocess,
        output_kind=inner.output_kind,
        class_names=inner.class_names,
        batch_size=inner.batch_size,
        softmax=bool(getattr(pixel, "softmax", False)),
    )


def _randomisation(metric: Randomisation, model: CountingModel, exp: Explanation, seed: int) -> np.ndarray:
    from scipy.stats import spearmanr

    inner = model.wrapped
    if not (isinstance(inner, DifferentiableModel) and hasattr(inner, "pixel_module") and hasattr(inner, "module")):
        raise MethodNotApplicableError(
            f"model: the randomisation check re-initialises layers of a torch module, but {type(inner).__name__} "
            "has none; wrap the torch nn.Module with TorchModel(module, preprocess=...)"
        )
    rand_model = randomised_copy(inner, metric.layers, seed)
    new = _explain_like(rand_model, exp, np.array(exp.images), exp.targets.tolist(), metric.params)
    model.count += int(new.n_model_evals)
    values = np.empty(exp.n_targets)
    for t in range(exp.n_targets):
        a, b = exp.attributions[0, t].reshape(-1), new.attributions[0, t].reshape(-1)
        if metric.absolute:
            a, b = np.abs(a), np.abs(b)
        values[t] = np.nan if np.ptp(a) == 0 or np.ptp(b) == 0 else float(spearmanr(a, b).statistic)
    return values


# --------------------------------------------------------------- regions
class Box(NamedTuple):
    """An object's box in pixels: ``(x0, y0)`` its top-left corner, ``(x1, y1)`` one past its bottom-right.

    x counts columns and y rows, so ``x1 - x0`` is the width (end exclusive),
    the order of PIL's ``crop`` and of COCO-style corner boxes. Name the
    fields, ``Box(x0=10, y0=4, x1=50, y1=30)``, and the order cannot be
    swapped; every plain 4-tuple xai-bridge accepts is read in this order.

    Example:
        >>> xb.evaluate(model, exp, "pointing_game", boxes=[xb.Box(x0=10, y0=4, x1=50, y1=30)])  # doctest: +SKIP
    """

    x0: float
    y0: float
    x1: float
    y1: float


def boxes_to_masks(boxes: Any, shape: tuple[int, int], n_images: int) -> np.ndarray:
    """Bool ``(N, H, W)`` masks from boxes :class:`Box` ``(x0, y0, x1, y1)`` (pixels, end exclusive).

    ``boxes`` holds one entry per image: a box, or a list of boxes (their
    union). A box with no pixel inside the image is refused (a box given as
    ``(y0, x0, y1, x1)`` often lands there).
    """
    items = list(boxes)
    if n_images == 1 and len(items) == 4 and all(np.ndim(v) == 0 for v in items):
        items = [items]
    if len(items) != n_images:
        raise ParameterError(f"boxes: got {len(items)} entries for {n_images} images; pass one box (or list) per image")
    h, w = shape
    out = np.zeros((n_images, h, w), bool)
    for i, entry in enumerate(items):
        arr = np.asarray(entry, dtype=float)
        arr = arr[None] if arr.ndim == 1 else arr
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise ParameterError(f"boxes: expected (x0, y0, x1, y1) per box, got {entry!r} for image {i}")
        for x0, y0, x1, y1 in arr.tolist():
            if not (x1 > x0 and y1 > y0):
                raise ParameterError(
                    f"boxes: box {(x0, y0, x1, y1)} of image {i} is empty; expected x1 > x0 and y1 > y0"
                )
            rows = slice(max(int(y0), 0), min(int(np.ceil(y1)), h))
            cols = slice(max(int(x0), 0), min(int(np.ceil(x1)), w))
            if rows.start >= rows.stop or cols.start >= cols.stop:
                raise ParameterError(
                    f"boxes: box {Box(x0, y0, x1, y1)} of image {i} has no pixel inside the {w}x{h} (width x height) "
                    "image; boxes are Box(x0, y0, x1, y1) with x the column and y the row"
                )
            out[i, rows, cols] = True
    return out


def _regions(exp: Explanation, boxes: Any, masks: Any) -> np.ndarray:
    """Bool ``(N, T, H, W)`` regions for the pointing game."""
    n, t, h, w = exp.attributions.shape
    if (boxes is None) == (masks is None):
        raise ParameterError("boxes/masks: the pointing game needs exactly one of boxes=... or masks=...")
    region = boxes_to_masks(boxes, (h, w), n) if boxes is not None else np.asarray(masks).astype(bool)
    if region.ndim == 3:
        region = np.repeat(region[:, None], t, axis=1)
    if region.shape != (n, t, h, w):
        raise ParameterError(f"masks: expected bool (N, H, W) or (N, T, H, W) = {(n, t, h, w)}, got {region.shape}")
    return region


def _quantus() -> Any:
    """Import Quantus, which imports TensorFlow when it is installed: triton must be loaded before it."""
    from xai_bridge.adapters._load_order import triton_before_tensorflow

    triton_before_tensorflow()
    import quantus

    return quantus
