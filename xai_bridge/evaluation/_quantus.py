"""Metrics routed to Quantus: our arrays adapted to its contract, and explanations re-run for it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge._seeding import numpy_seeded
from xai_bridge.errors import MethodNotApplicableError, ParameterError
from xai_bridge.explanation import Explanation
from xai_bridge.models import CountingModel, OutputKind

from ._common import _columns, _nchw, _predict_module
from ._quiet import stderr_fd_silenced

if TYPE_CHECKING:  # pragma: no cover
    from ._settings import FaithfulnessCorrelation, RandomLogit


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

    def score(t: int) -> Any:
        q = quantus.FaithfulnessCorrelation(
            nr_runs=metric.nr_runs,
            subset_size=metric.subset_size,
            perturb_baseline=metric.baseline,
            return_aggregate=False,
            disable_warnings=True,
        )
        a = _quantus_a(exp, t)
        return q(model=module, x_batch=x, y_batch=columns[:, t], a_batch=a, softmax=use_softmax, channel_first=True)

    return _seeded_per_target(exp, seed, score)


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

    def score(t: int) -> Any:
        q = quantus.RandomLogit(num_classes=num_classes, seed=seed, disable_warnings=True)
        a = _quantus_a(exp, t)
        return q(
            model=module, x_batch=x, y_batch=columns[:, t], a_batch=a, explain_func=explain_func, channel_first=True
        )

    return _seeded_per_target(exp, seed, score)


def _seeded_per_target(exp: Explanation, seed: int, score: Callable[[int], Any]) -> np.ndarray:
    """``score(t)``'s first value for each target, numpy seeded with ``seed`` per call; NaN for a constant map."""
    values = np.full(exp.n_targets, np.nan)
    for t in range(exp.n_targets):
        if _flat(exp, t):
            continue
        with numpy_seeded(seed):
            out = score(t)
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
    except ParameterError as exc:
        if params is not None or not exc.valid:  # a bad value, or a refused name with nothing to keep
            raise
        kept = {k: v for k, v in kwargs.items() if k in exc.valid}
        return explain(model, images, exp.method, targets=targets, seed=seed, **kept)


def _quantus() -> Any:
    """Import Quantus, which imports TensorFlow when it is installed: triton must be loaded before it."""
    from xai_bridge._load_order import triton_before_tensorflow

    triton_before_tensorflow()
    if "quantus" not in sys.modules:
        with stderr_fd_silenced():  # TensorFlow's C++ logs at import ignore TF_CPP_MIN_LOG_LEVEL (absl)
            import quantus
    import quantus

    return quantus
