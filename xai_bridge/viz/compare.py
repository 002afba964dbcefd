"""Agreement between methods: rank correlation of heatmaps and IoU of their top regions.

All functions take raw ``(H, W)`` maps (or :class:`~xai_bridge.Explanation`
objects) and compare them under one explicit transform (``Norm``): by default
the absolute value, since methods disagree on signs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xai_bridge.errors import ParameterError
from xai_bridge.explanation import Explanation
from xai_bridge.normalization import Norm

__all__ = ["agreement_matrix", "agreement_table", "rank_correlation", "top_k_iou"]


def _prepare(a: np.ndarray, mode: Norm | str | None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if mode is None or Norm(mode) is Norm.SIGNED or Norm(mode) is Norm.MINMAX:
        return a
    return np.abs(a) if Norm(mode) is Norm.ABS else np.maximum(a, 0.0)


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks of a flat array (ties share their mean rank)."""
    order = np.argsort(a, kind="stable")
    ranks = np.empty(a.size, np.float64)
    sorted_a = a[order]
    boundaries = np.flatnonzero(np.diff(sorted_a)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [a.size]])
    for s, e in zip(starts, ends, strict=False):
        ranks[order[s:e]] = (s + e - 1) / 2.0
    return ranks


def rank_correlation(a: np.ndarray, b: np.ndarray, mode: Norm | str | None = Norm.ABS) -> float:
    """Spearman rank correlation between two maps of the same shape.

    Args:
        a: first map (any shape, compared pixel by pixel).
        b: second map, the same shape.
        mode: transform applied first (``Norm.ABS`` default, ``Norm.POSITIVE``,
            or None / ``Norm.SIGNED`` for the raw signed values).

    Returns:
        A value in [-1, 1]; NaN when a map is constant.
    """
    x, y = _prepare(a, mode).ravel(), _prepare(b, mode).ravel()
    if x.shape != y.shape:
        raise ParameterError(f"maps: shapes differ, {np.shape(a)} vs {np.shape(b)}")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def top_k_iou(a: np.ndarray, b: np.ndarray, percent: float = 10.0, mode: Norm | str | None = Norm.ABS) -> float:
    """Intersection over union of the top ``percent`` % pixels of two maps.

    Args:
        a: first map.
        b: second map, the same shape as ``a``.
        percent: share of pixels kept in each map's top region (0-100].
        mode: transform applied first (see :func:`rank_correlation`).
    """
    if not 0 < percent <= 100:
        raise ParameterError(f"percent: expected a value in (0, 100], got {percent}")
    x, y = _prepare(a, mode).ravel(), _prepare(b, mode).ravel()
    if x.shape != y.shape:
        raise ParameterError(f"maps: shapes differ, {np.shape(a)} vs {np.shape(b)}")
    k = max(1, round(x.size * percent / 100.0))
    top_x = np.zeros(x.size, bool)
    top_y = np.zeros(x.size, bool)
    top_x[np.argsort(-x, kind="stable")[:k]] = True
    top_y[np.argsort(-y, kind="stable")[:k]] = True
    return float((top_x & top_y).sum() / (top_x | top_y).sum())


def _maps(explanations: Mapping[str, Explanation] | Sequence[Explanation]) -> dict[str, Explanation]:
    if isinstance(explanations, Mapping):
        return dict(explanations)
    return {exp.method: exp for exp in explanations}


def agreement_table(
    explanations: Mapping[str, Explanation] | Sequence[Explanation],
    percent: float = 10.0,
    mode: Norm | str | None = Norm.ABS,
) -> Any:
    """Pairwise agreement of methods on the same images and targets, as a tidy DataFrame.

    Args:
        explanations: ``{name: Explanation}`` (e.g. from ``explain_many``) or a list.
        percent: top region size for the IoU.
        mode: transform applied before comparing.

    Returns:
        ``pandas.DataFrame`` with columns ``method_a, method_b, image, target,
        rank_correlation, top_k_iou``, one row per pair of methods, image and
        target position where both methods explain the same target.
    """
    import pandas as pd

    exps = _maps(explanations)
    names = list(exps)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ea, eb = exps[a], exps[b]
            if ea.images.shape != eb.images.shape or not np.array_equal(ea.images, eb.images):
                raise ParameterError(f"explanations: {a!r} and {b!r} explain different images")
            for n in range(ea.n_images):
                for t in range(min(ea.n_targets, eb.n_targets)):
                    if ea.targets[n, t] != eb.targets[n, t]:
                        continue  # maps of different classes are not compared
                    ma, mb = ea.attributions[n, t], eb.attributions[n, t]
                    rows.append(
                        {
                            "method_a": a,
                            "method_b": b,
                            "image": n,
                            "target": int(ea.targets[n, t]),
                            "rank_correlation": rank_correlation(ma, mb, mode),
                            "top_k_iou": top_k_iou(ma, mb, percent, mode),
                        }
                    )
    return pd.DataFrame(rows, columns=["method_a", "method_b", "image", "target", "rank_correlation", "top_k_iou"])


def agreement_matrix(table: Any, value: str = "rank_correlation") -> Any:
    """Square ``method x method`` DataFrame of the mean ``value`` over images and targets.

    1 on the diagonal; NaN for a pair with no comparable maps.
    """
    import pandas as pd

    names = list(dict.fromkeys([*table["method_a"], *table["method_b"]]))
    mat = pd.DataFrame(np.where(np.eye(len(names), dtype=bool), 1.0, np.nan), index=names, columns=names)
    means = table.groupby(["method_a", "method_b"])[value].mean()
    for (a, b), v in means.items():
        mat.loc[a, b] = mat.loc[b, a] = v
    return mat
