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

__all__ = ["agreement_matrix", "agreement_table", "pairwise_agreement", "rank_correlation", "top_k_iou"]


def _prepare(a: np.ndarray, mode: Norm | str | None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if mode is None or Norm(mode) is Norm.SIGNED or Norm(mode) is Norm.MINMAX:
        return a
    return np.abs(a) if Norm(mode) is Norm.ABS else np.maximum(a, 0.0)


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks of a flat array (ties share their mean rank), vectorised over the runs of equal values."""
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    starts_run = np.empty(a.size, bool)
    starts_run[:1] = True
    np.not_equal(sorted_a[1:], sorted_a[:-1], out=starts_run[1:])
    starts = np.flatnonzero(starts_run)
    ends = np.append(starts[1:], a.size)
    ranks = np.empty(a.size, np.float64)
    ranks[order] = ((starts + ends - 1) / 2.0)[np.cumsum(starts_run) - 1]
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
    return _correlation(_centred_ranks(x), _centred_ranks(y))


def _centred_ranks(x: np.ndarray) -> np.ndarray:
    r = _ranks(x)
    return r - r.mean()


def _correlation(rx: np.ndarray, ry: np.ndarray) -> float:
    """Pearson correlation of centred ranks (Spearman's rho); NaN when either map is constant."""
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
    top_x, top_y = _top_mask(x, percent), _top_mask(y, percent)
    return float((top_x & top_y).sum() / (top_x | top_y).sum())


def _top_mask(x: np.ndarray, percent: float) -> np.ndarray:
    """The top ``percent`` % of a flat map as a bool mask (ties broken by position, as a stable sort does)."""
    k = max(1, round(x.size * percent / 100.0))
    top = np.zeros(x.size, bool)
    top[np.argsort(-x, kind="stable")[:k]] = True
    return top


def pairwise_agreement(
    maps: Sequence[np.ndarray], percent: float = 10.0, mode: Norm | str | None = Norm.ABS
) -> tuple[np.ndarray, np.ndarray]:
    """Rank correlation and top-k IoU of every pair of ``maps``, each map ranked once.

    Equal to :func:`rank_correlation` and :func:`top_k_iou` per pair, but a
    report comparing M methods sorts M maps instead of 2 x M x M.

    Args:
        maps: maps of one shape.
        percent: top region size for the IoU (0-100].
        mode: transform applied first (see :func:`rank_correlation`).

    Returns:
        ``(rho, iou)``, two symmetric ``(M, M)`` arrays with 1 on the diagonal
        (NaN in ``rho`` where a map is constant).
    """
    if not 0 < percent <= 100:
        raise ParameterError(f"percent: expected a value in (0, 100], got {percent}")
    flat = [_prepare(m, mode).ravel() for m in maps]
    if len({f.shape for f in flat}) > 1:
        raise ParameterError(f"maps: shapes differ, {sorted({np.shape(m) for m in maps})}")
    ranks = [_centred_ranks(f) for f in flat]
    tops = [_top_mask(f, percent) for f in flat]
    m = len(flat)
    rho, iou = np.eye(m), np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            rho[i, j] = rho[j, i] = _correlation(ranks[i], ranks[j])
            iou[i, j] = iou[j, i] = float((tops[i] & tops[j]).sum() / (tops[i] | tops[j]).sum())
    return rho, iou


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
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ea, eb = exps[a], exps[b]
            if ea.images.shape != eb.images.shape or not np.array_equal(ea.images, eb.images):
                raise ParameterError(f"explanations: {a!r} and {b!r} explain different images")
    rows: list[tuple[int, int, int, int, list[Any]]] = []  # sort key (pair, image, position), then the row
    n_images = exps[names[0]].n_images if names else 0
    for n in range(n_images):
        for t in range(max((exps[m].n_targets for m in names), default=0)):
            here = [m for m in names if t < exps[m].n_targets]
            rho, iou = pairwise_agreement([exps[m].attributions[n, t] for m in here], percent, mode)
            for i, a in enumerate(here):
                for j in range(i + 1, len(here)):
                    target = exps[a].targets[n, t]
                    if target != exps[here[j]].targets[n, t]:
                        continue  # maps of different classes are not compared
                    row = [a, here[j], n, int(target), float(rho[i, j]), float(iou[i, j])]
                    rows.append((names.index(a), names.index(here[j]), n, t, row))
    rows.sort(key=lambda r: r[:4])
    return pd.DataFrame(
        [r[4] for r in rows], columns=["method_a", "method_b", "image", "target", "rank_correlation", "top_k_iou"]
    )


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
