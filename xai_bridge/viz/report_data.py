"""What the HTML report shows, computed apart from how it is drawn (see :mod:`.report`).

Grouping explanations into one section per image, checking the report's
arguments, the maps' 8-bit encoding, per-method costs, the per-target
agreement between methods and per-image metrics. :mod:`.report` turns these
into HTML; nothing here writes markup.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from xai_bridge.errors import ParameterError
from xai_bridge.explanation import Explanation
from xai_bridge.normalization import Norm

from ._text import safe_text, score_text, shown_label
from ._thumbs import display_size, fit_image, fit_map
from .outlines import outline_mask

__all__ = [
    "PERCENTILES",
    "Agreement",
    "Section",
    "agreement",
    "check_metrics",
    "check_view",
    "decode_map",
    "encode_map",
    "fit",
    "image_metrics",
    "is_caption",
    "method_maps",
    "named",
    "png_base64",
    "sections",
]

#: Clip percentiles offered by the report's control.
PERCENTILES = (90.0, 95.0, 98.0, 99.0, 99.5, 99.9, 100.0)


def png_base64(array: np.ndarray) -> str:
    """``array`` as a base64 PNG (the report embeds every picture this way)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def encode_map(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Quantise a map to uint8 on a square-root scale; returns ``(bytes, max |value|)``.

    ``byte = 128 + round(127 * sign(v) * sqrt(|v| / max|v|))``: 0 stays 128
    exactly, and values down to ~1e-4 of the maximum stay distinguishable.
    """
    v = np.asarray(values, np.float64)
    v = np.where(np.isfinite(v), v, 0.0)  # NaN / inf are sent apart (``"bad"``): they must not set the scale
    top = float(np.max(np.abs(v))) if v.size else 0.0
    q = np.sign(v) * np.sqrt(np.abs(v) / top) if top > 0 else np.zeros_like(v)
    return (128 + np.rint(127 * q)).astype(np.uint8), top


def decode_map(encoded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_map` up to the maximum: values in [-1, 1] (``sign(q) * q**2``)."""
    q = (np.asarray(encoded, np.float64) - 128) / 127
    return np.sign(q) * q * q


def fit(array: np.ndarray, max_side: int, is_map: bool) -> np.ndarray:
    """Shrink images (Lanczos) and maps (box average) whose longer side exceeds ``max_side``.

    Huge ones are block-averaged first (:func:`~xai_bridge.viz._thumbs.shrink`), so the work follows ``max_side``.
    """
    h, w = array.shape[:2]
    if max(h, w) <= max_side:
        return array
    size = display_size(h, w, max_side)
    return fit_map(array, size) if is_map else fit_image(array, size)


@dataclass
class Section:
    """One image of the report and every (method name, Explanation, image index) that explains it."""

    image: np.ndarray
    entries: list[tuple[str, Explanation, int]] = field(default_factory=list)

    @property
    def n_tabs(self) -> int:
        """Target (or caption token) tabs: the most targets any of its explanations has."""
        return max(exp.n_targets for _, exp, _ in self.entries)

    def non_finite(self) -> int:
        """NaN and infinite values in the section's maps (the page draws them hatched)."""
        return sum(
            int(np.size(m) - np.count_nonzero(np.isfinite(m)))
            for _, exp, n in self.entries
            for m in exp.attributions[n]
        )


def named(explanations: Any) -> list[tuple[str, Explanation]]:
    """``(name, Explanation)`` pairs from a dict, a list or one Explanation, refusing anything else."""
    if isinstance(explanations, Explanation):
        explanations = [explanations]
    if isinstance(explanations, Mapping):
        items = [(safe_text(k), v) for k, v in explanations.items()]
    elif isinstance(explanations, Sequence) and not isinstance(explanations, str):
        items = [(v.method if isinstance(v, Explanation) else "?", v) for v in explanations]
    else:
        raise ParameterError(
            f"explanations: expected {{name: Explanation}} or a list of Explanations, got {type(explanations).__name__}"
        )
    for name, exp in items:
        if not isinstance(exp, Explanation):
            raise ParameterError(
                f"explanations: expected Explanations, got {type(exp).__name__} for {name!r}; pass the results of "
                "explain / explain_many / explain_caption (or Explanation.load(path))"
            )
    if not items:
        raise ParameterError("explanations: pass at least one Explanation")
    return items


def sections(items: list[tuple[str, Explanation]]) -> list[Section]:
    """Group every explained image by its pixels, in order of first appearance."""
    found: dict[bytes, Section] = {}
    for name, exp in items:
        for n in range(exp.n_images):
            img = exp.images[n]
            key = hashlib.sha1(repr(img.shape).encode() + img.tobytes()).digest()
            sec = found.setdefault(key, Section(img))
            if any(other == name for other, _, _ in sec.entries):
                raise ParameterError(
                    f"explanations: two explanations named {name!r} explain the same image; pass a dict "
                    "{name: Explanation} with distinct names"
                )
            sec.entries.append((name, exp, n))
    return list(found.values())


def check_view(
    norm: Norm | str | None, percentile: float, image_names: Sequence[str] | None, n_sections: int
) -> tuple[str, list[str]]:
    """The colour mode shown first and one label per section, or a clear error for bad arguments."""
    mode = "auto" if norm is None else Norm(norm).value
    if mode not in ("auto", "signed", "abs"):
        raise ParameterError(f"norm: expected None, 'signed' or 'abs' for the report, got {norm!r}")
    if float(percentile) not in PERCENTILES:
        raise ParameterError(f"percentile: expected one of {list(PERCENTILES)}, got {percentile!r}")
    if image_names is None:
        return mode, [f"image {i}" for i in range(n_sections)]
    names = [safe_text(x) for x in image_names]
    if len(names) != n_sections:
        raise ParameterError(
            f"image_names: expected {n_sections} names (one per image), got {len(names)}; "
            "pass one name per image or leave it out"
        )
    return mode, names


def check_metrics(metrics: Any) -> Any:
    """The metrics DataFrame of :func:`~xai_bridge.evaluation.metrics.evaluate`, or a clear error."""
    columns = [str(c) for c in getattr(metrics, "columns", [])]
    needed = {"method", "metric", "value"}
    if needed <= set(columns):
        return metrics
    if {"method_a", "method_b"} <= set(columns):
        raise ParameterError(
            "metrics: expected the DataFrame of xai_bridge.evaluation.evaluate() (columns method, metric, image, "
            "value), got the agreement table (method_a, method_b, ...); the report computes agreement itself, "
            "pass metrics=evaluate(model, explanations, ...) or leave it out"
        )
    got = f"columns {columns}" if columns else type(metrics).__name__
    raise ParameterError(
        f"metrics: expected the DataFrame of xai_bridge.evaluation.evaluate() (columns method, metric, image, value), "
        f"got {got}; pass metrics=evaluate(model, explanations, ...)"
    )


def is_caption(exp: Explanation) -> bool:
    """Whether ``exp`` explains a caption's tokens (its targets are tokens, not classes)."""
    return "caption" in exp.params and "caption_tokens" in exp.params


def method_maps(sec: Section, signed: Mapping[str, bool], max_side: int) -> list[dict[str, Any]]:
    """Each method's encoded maps of one section, one slot per tab (None where it has fewer targets)."""
    methods = []
    for name, exp, n in sec.entries:
        targets: list[dict[str, str] | None] = []
        for t in range(sec.n_tabs):
            if t >= exp.n_targets:
                targets.append(None)
                continue
            shown = fit(exp.attributions[n, t], max_side, is_map=True)
            encoded, _ = encode_map(shown)
            entry = {
                "png": png_base64(encoded),
                "name": shown_label(exp.target_names[n, t]),
                "score": score_text(exp, n, t),
            }
            bad = ~np.isfinite(shown)
            if bad.any():  # NaN / inf: the page hatches these pixels
                entry["bad"] = png_base64(bad.astype(np.uint8) * 255)
            edges = outline_mask(exp, n, t, encoded.shape[:2])
            if edges is not None:  # a detection's box, the regions of a semantic-region run: drawn over the map
                entry["outline"] = png_base64(edges.astype(np.uint8) * 255)
            targets.append(entry)
        methods.append({"name": name, "signed": bool(signed[name]), "targets": targets})
    return methods


@dataclass(frozen=True)
class Agreement:
    """How the methods of one section agree on one target position.

    Attributes:
        names: the methods compared (those with a target at this position).
        cells: ``cells[a][b]`` is ``(rank correlation, top-k IoU)``; NaN where
            the two methods explain different classes.
    """

    names: list[str]
    cells: list[list[tuple[float, float]]]


def agreement(sec: Section, t: int, percent: float = 10.0) -> Agreement | None:
    """Pairwise agreement of the section's maps at target position ``t`` (None with fewer than two methods)."""
    from .compare import pairwise_agreement

    rows = [(name, exp, n) for name, exp, n in sec.entries if t < exp.n_targets]
    if len(rows) < 2:
        return None
    rho, iou = pairwise_agreement([_finite(exp.attributions[n, t]) for _, exp, n in rows], percent)
    classes = [exp.targets[n, t] for _, exp, n in rows]
    cells = [
        [
            (float(rho[a, b]), float(iou[a, b])) if classes[a] == classes[b] else (float("nan"), float("nan"))
            for b in range(len(rows))
        ]
        for a in range(len(rows))
    ]  # different classes are not compared
    return Agreement([name for name, _, _ in rows], cells)


def _finite(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN and infinities as 0 (as the page draws them uncoloured), for ranking."""
    return values if np.isfinite(values).all() else np.where(np.isfinite(values), values, 0.0)


def image_metrics(sec: Section, metrics: Any) -> Any:
    """The section's metrics as a DataFrame, one row per method (mean over its targets), or None."""
    if metrics is None or not len(metrics) or "image" not in metrics.columns:
        return None
    rows = []
    for name, exp, n in sec.entries:
        sub = metrics[(metrics["method"] == exp.method) & (metrics["image"] == n)]
        if len(sub):
            means = sub.groupby("metric")["value"].mean()
            rows.append({"method": name, **{str(k): float(v) for k, v in means.items()}})
    if not rows:
        return None
    import pandas as pd

    return pd.DataFrame(rows)
