"""Which outputs to explain: an index, a list per image, a class name, top-k."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validate import int_at_least
from .errors import ParameterError

__all__ = ["TargetSpec", "TopK", "needs_predictions", "resolve_targets", "top_k"]


@dataclass(frozen=True)
class TopK:
    """The ``k`` highest-scoring outputs of each image, best first."""

    k: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", int_at_least("top_k: k", self.k, 1))


def top_k(k: int) -> TopK:
    """Target the ``k`` highest-scoring outputs of each image (seed 003 uses 4)."""
    return TopK(k)


TargetSpec = int | str | TopK | Sequence[Any] | np.ndarray | None


_TOP = re.compile(r"top-?(\d+)", re.IGNORECASE)


def _as_top_k(spec: TargetSpec) -> TargetSpec:
    """``"top3"`` / ``"top-3"`` as ``top_k(3)`` (``"top0"`` is refused); anything else unchanged."""
    if isinstance(spec, str):
        match = _TOP.fullmatch(spec.strip())
        if match:
            return TopK(int_at_least(f"targets: {spec!r}: k", int(match.group(1)), 1))
    return spec


def needs_predictions(spec: TargetSpec) -> bool:
    """Whether resolving ``spec`` needs the model's outputs (top-k)."""
    return spec is None or isinstance(_as_top_k(spec), TopK)


def resolve_targets(
    spec: TargetSpec,
    n_images: int,
    outputs: np.ndarray | None,
    class_names: Sequence[str] | None,
    n_outputs: int | None,
) -> np.ndarray:
    """Turn a target spec into an int64 ``(N, T)`` array.

    Args:
        spec: ``"top1"`` (default), ``top_k(k)`` (or ``"topk"``, e.g. ``"top3"``), an int, a class name, a list
            with one entry per image (ints or names), or an ``(N, T)`` nested list.
        n_images: ``N``.
        outputs: ``(N, K)`` model outputs (needed for top-k).
        class_names: names of the outputs (needed for names).
        n_outputs: ``K``, to check indices are in range.

    Returns:
        int64 ``(N, T)``.
    """
    spec = TopK(1) if spec is None else _as_top_k(spec)
    if isinstance(spec, np.ndarray) and spec.ndim == 0:
        spec = spec.item()
    if not isinstance(spec, (TopK, int, np.integer, str, list, tuple, np.ndarray)):
        raise ParameterError(
            f"targets: expected 'top1', top_k(k), a class index, a class name or one entry per image, got {spec!r}"
        )
    if isinstance(spec, TopK):
        if outputs is None:
            raise ParameterError("targets: top-k targets need the model outputs")
        k = min(spec.k, outputs.shape[1])
        order = np.argsort(-outputs, axis=1, kind="stable")
        return order[:, :k].astype(np.int64)
    if isinstance(spec, (int, np.integer, str)):
        idx = _one(spec, class_names, n_outputs)
        return np.full((n_images, 1), idx, dtype=np.int64)
    items = list(spec)
    if len(items) != n_images:
        raise ParameterError(
            f"targets: got {len(items)} entries for {n_images} images; pass one entry per image, "
            "a single int/name for all, 'top1' or top_k(k)"
        )
    rows = [[_one(v, class_names, n_outputs) for v in (it if _is_seq(it) else [it])] for it in items]
    widths = {len(r) for r in rows}
    if len(widths) != 1 or 0 in widths:
        raise ParameterError(f"targets: every image needs the same number (>= 1) of targets, got {sorted(widths)}")
    return np.asarray(rows, dtype=np.int64)


def _is_seq(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _one(value: Any, class_names: Sequence[str] | None, n_outputs: int | None) -> int:
    if isinstance(value, str):
        if class_names is None:
            raise ParameterError(f"targets: class name {value!r} given but the model has no class_names; pass an index")
        return _named(value, [str(c) for c in class_names])
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"targets: expected class indices or names, got {value!r}")
    idx = int(value)
    if idx < 0 or (n_outputs is not None and idx >= n_outputs):
        raise ParameterError(f"targets: class {idx} is out of range for a model with {n_outputs} outputs")
    return idx


#: Candidates an ambiguity error lists before it counts the rest.
_MAX_LISTED = 6


def _named(value: str, names: list[str]) -> int:
    """The one class ``value`` names, trying ever looser matches; several at the first tier that matches refuse.

    The tiers: the whole name exactly, the whole name ignoring case, then one
    of the comma-separated synonyms ImageNet names carry as Hugging Face and
    timm spell them (``"tabby, tabby cat"``), exactly then ignoring case. An
    exact unique match wins over looser ones, so ``{0: "cat", 1: "Cat"}``
    resolves ``"cat"`` to 0; ``"crane"`` in ImageNet (134 the bird, 517 the
    machine) is refused with both indices rather than silently taking the first.
    """
    folded = value.casefold()
    synonyms = [[s.strip() for s in c.split(",")] for c in names]
    tiers = (
        lambda i: names[i] == value,
        lambda i: names[i].casefold() == folded,
        lambda i: value in synonyms[i],
        lambda i: folded in (s.casefold() for s in synonyms[i]),
    )
    for matches in tiers:
        found = [i for i in range(len(names)) if matches(i)]
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(f"{i} {names[i]!r}" for i in found[:_MAX_LISTED])
            more = f" and {len(found) - _MAX_LISTED} more" if len(found) > _MAX_LISTED else ""
            raise ParameterError(
                f"targets: {value!r} names {len(found)} classes: {listed}{more}; pass the index of the one you mean"
            )
    lowered = [c.casefold() for c in names]
    close = difflib.get_close_matches(folded, lowered, n=3)
    hint = f" Did you mean {', '.join(repr(names[lowered.index(c)]) for c in close)}?" if close else ""
    raise ParameterError(f"targets: no class named {value!r}.{hint}")
