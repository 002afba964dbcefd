"""A self-contained HTML report: every image, every method, costs and agreement.

One file, images embedded as base64 PNG, no scripts and no external
resources, so it opens offline anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xai_bridge.explanation import Explanation
from xai_bridge.normalize import Norm, normalize

__all__ = ["build_report", "write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
.row{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;text-align:center;font-size:12px}
figure img{width:200px;height:auto;border:1px solid #ccc}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.note{color:#666;font-size:12px}
"""


def _png(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _overlay_png(image: np.ndarray, norm_map: np.ndarray) -> str:
    from .plot import overlay

    rgb = overlay(image, norm_map, "heat", alpha=0.5)
    return _png(np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8))


def _table(df: Any, float_format: str = "{:.3f}") -> str:
    cols = list(df.columns)
    rows = ["<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in cols) + "</tr>"]
    for rec in zip(*(df[c].tolist() for c in cols), strict=False):  # per column, so ints stay ints (iterrows upcasts)
        cells = []
        for v in rec:
            text = float_format.format(v) if isinstance(v, (float, np.floating)) else str(v)
            cells.append(f'<td class="{"l" if isinstance(v, str) else ""}">{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def build_report(
    explanations: Mapping[str, Explanation] | Sequence[Explanation],
    *,
    title: str = "xai-bridge report",
    metrics: Any = None,
    norm: Norm | str = Norm.ABS,
    percentile: float | None = 99.0,
    image_names: Sequence[str] | None = None,
) -> str:
    """Return the report as one HTML string.

    Args:
        explanations: ``{name: Explanation}`` (from ``explain_many``) or a list,
            all over the same images.
        title: page title.
        metrics: optional tidy DataFrame from :func:`xai_bridge.evaluation.metrics.evaluate`
            (columns ``method, metric, image, value``), shown pivoted.
        norm: the one normalisation rule applied to every overlay.
        percentile: clip at this percentile of the normalised values (None: the maximum).
        image_names: labels of the images (default ``image 0``, ...).
    """
    from .compare import agreement_table

    exps = dict(explanations) if isinstance(explanations, Mapping) else {e.method: e for e in explanations}
    if not exps:
        raise ValueError("explanations: pass at least one Explanation")
    first = next(iter(exps.values()))
    names = list(image_names) if image_names is not None else [f"image {i}" for i in range(first.n_images)]
    agreement = agreement_table(exps) if len(exps) > 1 else None
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p class='note'>Overlays: {Norm(norm).value} values clipped at the {percentile}th percentile, "
        "each map scaled to [0, 1] by the same rule (jet colour map).</p>",
    ]
    cost = "".join(
        f"<tr><td class='l'>{html.escape(n)}</td><td>{e.seconds:.2f}</td><td>{e.n_model_evals}</td>"
        f"<td class='l'>{html.escape(e.library)} {html.escape(e.library_version)}</td></tr>"
        for n, e in exps.items()
    )
    parts.append(
        "<h2>Methods</h2><table><tr><th class='l'>method</th><th>seconds</th><th>model evaluations</th>"
        f"<th class='l'>library</th></tr>{cost}</table>"
    )
    for i in range(first.n_images):
        parts.append(
            f"<h2>{html.escape(names[i])}: predicted {html.escape(str(first.target_names[i, 0]))} "
            f"(score {first.scores[i, 0]:.3f})</h2><div class='row'>"
        )
        parts.append(
            f"<figure><img alt='{html.escape(names[i])}' src='data:image/png;base64,"
            f"{_png(first.images[i])}'><figcaption>input</figcaption></figure>"
        )
        for name, exp in exps.items():
            m = normalize(exp.attributions[i, 0], norm, percentile=percentile)
            parts.append(
                f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,"
                f"{_overlay_png(exp.images[i], m)}'><figcaption>{html.escape(name)}<br>"
                f"{html.escape(str(exp.target_names[i, 0]))} &middot; {exp.seconds:.2f}s &middot; "
                f"{exp.n_model_evals} evals</figcaption></figure>"
            )
        parts.append("</div>")
        if agreement is not None:
            sub = agreement[(agreement["image"] == i)].drop(columns=["image"])
            parts.append(
                "<p class='note'>Agreement (Spearman rank correlation of |maps|, IoU of the top 10% "
                "pixels):</p>" + _table(sub)
            )
    if metrics is not None and len(metrics):
        pivot = metrics.pivot_table(index=["method"], columns="metric", values="value", aggfunc="mean").reset_index()
        pivot.columns = [str(c) for c in pivot.columns]
        parts.append("<h2>Metrics</h2><p class='note'>Mean over images and targets.</p>" + _table(pivot))
    parts.append("</body></html>")
    return "".join(parts)


def write_report(path: str | os.PathLike[str], explanations: Any, **kwargs: Any) -> Path:
    """Write :func:`build_report` to ``path`` (atomically) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(build_report(explanations, **kwargs), encoding="utf-8")
    os.replace(tmp, path)
    return path
