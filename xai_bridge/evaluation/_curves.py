"""Deletion and insertion curves (Petsiuk et al. 2018): batched numpy through ``model.predict``."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

from xai_bridge.explanation import Explanation
from xai_bridge.models import CountingModel, Model

from ._common import _columns, _scores

if TYPE_CHECKING:  # pragma: no cover
    from ._settings import Deletion


class Baseline(str, enum.Enum):
    """What removed pixels become in deletion / insertion."""

    BLACK = "black"
    BLUR = "blur"


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
