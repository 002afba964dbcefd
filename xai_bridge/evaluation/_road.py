"""ROAD (Rong et al. 2022) through pytorch-grad-cam's ``ROAD{Most,Least}RelevantFirstAverage``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xai_bridge._seeding import GLOBAL_RNG_LOCK
from xai_bridge.explanation import Explanation
from xai_bridge.models import CountingModel, OutputKind

from ._common import _columns, _nchw, _predict_module

if TYPE_CHECKING:  # pragma: no cover
    from ._settings import ROAD


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
