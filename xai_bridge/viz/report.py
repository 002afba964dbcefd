"""An interactive, self-contained HTML report: every image, target and method, costs, agreement, metrics.

One file that opens offline (no CDN, no server): images and maps are
embedded as base64 PNG, and a small vanilla script does the colouring in
the browser, so each image's section has target (or caption token) tabs, an
opacity slider, a clip-percentile control and a signed/|value| switch. Maps
are stored quantised to 8 bits on a square-root scale (``sign(v) *
sqrt(|v| / max|v|)``), which keeps small values distinguishable and the file
small; the colour rule is the one of :mod:`xai_bridge.viz.colors`. What each
section shows is computed in :mod:`.report_data`; this module draws it.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xai_bridge.explanation import Explanation
from xai_bridge.normalization import Norm

from ._report_assets import CSS, JS
from ._text import library_text, probabilities, safe_text, score_text, shown_label
from .colors import (
    BLUE,
    DEFAULT_OPACITY,
    NON_FINITE_NOTE,
    RED,
    non_finite_count,
    sequential_lut,
    signed_maps,
    warn_non_finite,
)
from .report_data import (
    PERCENTILES,
    Section,
    agreement,
    check_metrics,
    check_view,
    decode_map,
    encode_map,
    fit,
    image_metrics,
    is_caption,
    method_maps,
    named,
    png_base64,
    sections,
)

__all__ = ["PERCENTILES", "build_report", "decode_map", "encode_map", "write_report"]

#: Panels are drawn at least this wide (CSS pixels), whatever the image size.
PANEL_PX = 288


def _esc(value: Any) -> str:
    return html.escape(safe_text(value))


def _table(df: Any, float_format: str = "{:.3f}") -> str:
    cols = list(df.columns)
    rows = ["<tr>" + "".join(f"<th>{html.escape(safe_text(c))}</th>" for c in cols) + "</tr>"]
    for rec in zip(*(df[c].tolist() for c in cols), strict=False):  # per column, so ints stay ints (iterrows upcasts)
        cells = []
        for v in rec:
            text = float_format.format(v) if isinstance(v, (float, np.floating)) else safe_text(v)
            cells.append(f'<td class="{"l" if isinstance(v, str) else ""}">{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _colour(value: float) -> str:
    """Background of an agreement cell: red for agreement, blue for disagreement, white for none."""
    if not np.isfinite(value):
        return "#eee"
    a = min(1.0, abs(value)) * 0.75
    base = RED if value >= 0 else BLUE
    r, g, b = (round(255 * (1 - a) + c * a) for c in base)
    return f"rgb({r},{g},{b})"


def _agreement_html(sec: Section, t: int, percent: float = 10.0) -> str:
    """The method x method heatmap of one target position of one image."""
    found = agreement(sec, t, percent)
    if found is None:
        return ""
    head = "<tr><th></th>" + "".join(f"<th>{html.escape(x)}</th>" for x in found.names) + "</tr>"
    body = []
    for name_a, line in zip(found.names, found.cells, strict=True):
        cells = []
        for name_b, (rho, iou) in zip(found.names, line, strict=True):
            text = "&ndash;" if not np.isfinite(rho) else f"{rho:.2f}<br><small>({iou:.2f})</small>"
            background = "#f3f3f3" if name_a == name_b else _colour(rho)  # the diagonal is trivially 1
            cells.append(f"<td class='v' style='background:{background}'>{text}</td>")
        body.append(f"<tr><th class='l'>{html.escape(name_a)}</th>{''.join(cells)}</tr>")
    guide = (
        "<p class='note'>Agreement for this target: Spearman rank correlation of |maps| over pixels "
        "(1: the same pixels ranked the same, 0: unrelated, &minus;1: reversed; red agrees, blue disagrees), "
        f"in brackets the overlap (IoU) of their top {percent:g}% pixels. &ndash;: the methods explain other classes.</p>"
    )
    return f"<div class='agree' data-t='{t}'{' hidden' if t else ''}>{guide}<table>{head}{''.join(body)}</table></div>"


def _legend(opacity: float) -> str:
    lut = sequential_lut(9)
    seq = ",".join(
        f"rgb({round(255 * (1 - opacity * k / 8) + c[0] * opacity * k / 8)},"
        f"{round(255 * (1 - opacity * k / 8) + c[1] * opacity * k / 8)},"
        f"{round(255 * (1 - opacity * k / 8) + c[2] * opacity * k / 8)})"
        for k, c in enumerate(lut)
    )

    def mix(c: tuple[int, int, int]) -> str:
        return "rgb(" + ",".join(str(round(255 * (1 - opacity) + v * opacity)) for v in c) + ")"

    return (
        "<div class='legend'>"
        f"<div data-signed='1'><span class='rule'></span><div class='bar' style='background:linear-gradient(90deg,"
        f"{mix(BLUE)},#fff,{mix(RED)})'></div><div class='ends'><span>&minus;clip (against)</span><span>0</span>"
        "<span>+clip (for)</span></div></div>"
        f"<div data-signed='0'><span class='rule'></span><div class='bar' style='background:linear-gradient(90deg,"
        f"{seq})'></div><div class='ends'><span>0</span><span>clip</span></div></div></div>"
    )


@dataclass(frozen=True)
class _View:
    """What every section starts with: map size, opacity, clip percentile and colour mode."""

    max_side: int
    opacity: float
    percentile: float
    mode: str


def build_report(
    explanations: Mapping[str, Explanation] | Sequence[Explanation] | Explanation,
    *,
    title: str = "xai-bridge report",
    metrics: Any = None,
    norm: Norm | str | None = None,
    percentile: float = 99.0,
    image_names: Sequence[str] | None = None,
    opacity: float = DEFAULT_OPACITY,
    max_side: int = 512,
    sanity: bool = False,
    model: Any = None,
) -> str:
    """Return the report as one HTML string.

    Args:
        explanations: ``{name: Explanation}`` (from ``explain_many``), a list
            (e.g. the per-image results of ``explain_caption``), or one
            Explanation. Explanations of the same image share its section.
        title: page title.
        metrics: optional tidy DataFrame from :func:`xai_bridge.evaluation.metrics.evaluate`
            (columns ``method, metric, image, value``), shown per image and as means.
        norm: the colours shown first: None (each method's own kind: signed
            methods diverging, others sequential), ``"signed"`` or ``"abs"``
            for every map; the page can switch.
        percentile: the clip percentile of ``|value|`` shown first (one of :data:`PERCENTILES`).
        image_names: one label per image section (default ``image 0``, ...).
        opacity: the overlay opacity at the clip value shown first.
        max_side: maps and images larger than this are shrunk to it (file size).
        sanity: run the cascading randomisation check per method (one extra
            explanation each, on ``model``) and mark the methods whose maps do
            not change when the model is randomised (:mod:`._sanity`).
        model: the torch model the explanations were made with (for ``sanity``).

    Raises:
        ParameterError: no explanations, wrong ``image_names`` length, a
            table other than :func:`evaluate`'s as ``metrics``, a bad ``norm``
            or ``percentile``.
    """
    items = named(explanations)
    found = sections(items)
    mode, names = check_view(norm, percentile, image_names, len(found))
    if metrics is not None:
        metrics = check_metrics(metrics)
    view = _View(max_side, float(opacity), float(percentile), mode)
    signed = {name: signed_maps(exp) for name, exp in items}
    parts = _summary_html(title, len(found), items, signed, metrics, sanity, model)
    payload = _payload(view)
    warn_non_finite("report", {name: non_finite_count(exp.attributions) for name, exp in items})
    for i, sec in enumerate(found):
        parts.append(_section_html(i, sec, names[i], signed, payload, metrics, view))
    if not found:
        parts.append("<p class='note'><i>Nothing to show: the explanations hold 0 images.</i></p>")
    data = script_json(payload)
    parts.append(f"<script type='application/json' id='xb-data'>{data}</script><script>{JS}</script></body></html>")
    return "".join(parts)


def _summary_html(
    title: str,
    n_sections: int,
    items: list[tuple[str, Explanation]],
    signed: Mapping[str, bool],
    metrics: Any,
    sanity: bool,
    model: Any,
) -> list[str]:
    """The page's head: title and counts, each method's cost, the metric means, and the sanity check if asked."""
    parts = [_intro_html(title, n_sections, len(items)), _costs_html(items, signed), _metrics_html(metrics)]
    if sanity:
        from ._sanity import sanity_html, sanity_rows

        parts.append(sanity_html(sanity_rows(items, model)))
    return parts


def _payload(view: _View) -> dict[str, Any]:
    """The data the page's script reads: the colour rule's tables, the view shown first; sections are added."""
    return {
        "red": list(RED),
        "blue": list(BLUE),
        "seq": sequential_lut().ravel().tolist(),
        "opacity": view.opacity,
        "percentile": view.percentile,
        "percentiles": list(PERCENTILES),
        "mode": view.mode,
        "sections": [],
    }


def script_json(payload: Any) -> str:
    r"""``payload`` as JSON that stays data inside a ``<script>`` element, whatever text it holds.

    ``<``, ``>`` and ``&`` are written as ``\u003c``, ``\u003e`` and
    ``\u0026`` (JSON strings read them back unchanged), so a label such as
    ``<!--<script`` or ``</script>`` can neither end the element nor switch
    the parser into its escaped states; non-ASCII (U+2028 included) is
    escaped by ``json.dumps``.
    """
    text = json.dumps(payload, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _intro_html(title: str, n_sections: int, n_items: int) -> str:
    """The page head, the title and the note on how maps are coloured."""
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(shown_label(title, 200))}</title>"
        f"<style>{CSS % {'px': PANEL_PX}}</style></head><body><h1>{_esc(shown_label(title, 200))}</h1>"
        f"<p class='note'>{n_sections} image(s), {n_items} explanation(s). Each map is coloured by one rule: "
        "methods whose maps carry a sign (evidence for and against the target) on a diverging scale, red for and "
        "blue against; unsigned methods on a green-yellow scale. Opacity grows with |value| (zero shows the image), "
        "clipped per map at a percentile of |value|. Per image: pick the target (or caption token), the opacity, "
        "the clip percentile, and signed or |value| colours.</p>"
    )


def _costs_html(items: list[tuple[str, Explanation]], signed: Mapping[str, bool]) -> str:
    """The table of methods: library, kind of map, and what each call cost in total and per image."""
    cost = "".join(
        f"<tr><td class='l'>{_esc(name)}</td><td class='l'>{_esc(library_text(exp))}</td>"
        f"<td class='l'>{'signed' if signed[name] else 'unsigned'}</td><td>{exp.n_images}</td>"
        f"<td>{exp.seconds:.2f}</td><td>{exp.n_model_evals}</td>"
        f"<td>{exp.seconds / max(exp.n_images, 1):.2f}</td><td>{exp.n_model_evals / max(exp.n_images, 1):.0f}</td></tr>"
        for name, exp in items
    )
    return (
        "<h2>Methods</h2><table><tr><th class='l'>method</th><th class='l'>library</th><th class='l'>maps</th>"
        "<th>images</th><th>seconds</th><th>model evaluations</th><th>seconds / image</th>"
        f"<th>evaluations / image</th></tr>{cost}</table>"
        "<p class='note'>Seconds and evaluations are for the whole call; per image they are the call's share.</p>"
    )


def _metrics_html(metrics: Any) -> str:
    """The metrics' means per method, or nothing without metrics."""
    if metrics is None or not len(metrics):
        return ""
    pivot = metrics.pivot_table(index=["method"], columns="metric", values="value", aggfunc="mean").reset_index()
    pivot.columns = [str(c) for c in pivot.columns]
    return "<h2>Metrics</h2><p class='note'>Mean over images and targets.</p>" + _table(pivot)


def _section_html(
    i: int,
    sec: Section,
    label: str,
    signed: Mapping[str, bool],
    payload: dict[str, Any],
    metrics: Any,
    view: _View,
) -> str:
    """One image: heading, controls, legend, the input and every method's canvas, agreement and metrics."""
    image = fit(sec.image, view.max_side, is_map=False)
    h, w = image.shape[:2]
    payload["sections"].append({"w": w, "h": h, "methods": method_maps(sec, signed, view.max_side)})
    figures = "".join(_figure_html(mi, name, exp, w, h) for mi, (name, exp, _) in enumerate(sec.entries))
    agreement_html = "".join(_agreement_html(sec, t) for t in range(sec.n_tabs))
    per_image = image_metrics(sec, metrics)
    metric_html = (
        ""
        if per_image is None
        else "<p class='note'>Metrics of this image (mean over its targets):</p>" + _table(per_image)
    )
    bad = sec.non_finite()
    note = f"<p class='note'>{NON_FINITE_NOTE} ({bad}), in black and white stripes.</p>" if bad else ""
    return (
        f"<section class='image' id='image-{i}'><h2>{_esc(shown_label(label, 200))}: {_heading(sec)}</h2>"
        f"{_controls_html(sec, view)}{_legend(view.opacity)}{note}"
        f"<div class='row'><figure><img class='input' alt='{_esc(label)}' src='data:image/png;base64,"
        f"{png_base64(image)}'><figcaption><b>input</b><br>{w}x{h}</figcaption></figure>{figures}</div>"
        f"{agreement_html}{metric_html}</section>"
    )


def _figure_html(mi: int, name: str, exp: Explanation, w: int, h: int) -> str:
    """One method's canvas (the script paints it) with its name, target and cost per image."""
    per_image = f"{exp.seconds / max(exp.n_images, 1):.2f} s, {exp.n_model_evals / max(exp.n_images, 1):.0f} evals"
    return (
        f"<figure data-method='{mi}'><canvas width='{w}' height='{h}' aria-label='{_esc(name)}'></canvas>"
        f"<figcaption><b>{_esc(name)}</b><br><span class='tgt'></span><br>"
        f"<span class='cost'>{per_image} per image</span></figcaption></figure>"
    )


def _heading(sec: Section) -> str:
    """What the section explains: the caption, or the predicted class with its probability."""
    _, first, n0 = sec.entries[0]
    if is_caption(first):
        return f"caption &ldquo;{_esc(shown_label(first.params.get('caption', ''), 300))}&rdquo;"
    if not sec.n_tabs:
        return "no targets"
    if not first.n_targets:
        _, first, n0 = next(entry for entry in sec.entries if entry[1].n_targets)
    top = f"{_esc(shown_label(first.target_names[n0, 0]))}"
    probs = probabilities(first)
    if probs is not None:
        top += f" ({_esc(score_text(first, n0, 0))})"
    return f"predicted {top}"


def _controls_html(sec: Section, view: _View) -> str:
    """The target (or token) tabs, the opacity and clip sliders and the colour switch of one section."""
    caption = is_caption(sec.entries[0][1])
    tabs = []
    for t in range(sec.n_tabs):
        exp, n = next((exp, n) for _, exp, n in sec.entries if t < exp.n_targets)
        sub = score_text(exp, n, t)
        text = _esc(shown_label(exp.target_names[n, t]))
        tabs.append(
            f"<button type='button' data-t='{t}'{' class=on' if t == 0 else ''}>"
            f"{'' if caption else f'{t + 1}. '}{text}{f' <small>{_esc(sub)}</small>' if sub and not caption else ''}"
            "</button>"
        )
    modes = (("auto", "each method's own"), ("signed", "signed (red/blue)"), ("abs", "|value|"))
    options = "".join(
        f"<option value='{v}'{' selected' if v == view.mode else ''}>{text}</option>" for v, text in modes
    )
    return (
        "<div class='controls'>"
        f"<div class='tabs'>{'token' if caption else 'target'}: {''.join(tabs) or '<i>none</i>'}</div>"
        f"<label>opacity <input class='opacity' type='range' min='0' max='100' value='{round(view.opacity * 100)}'> "
        "<span class='op-value'></span></label>"
        f"<label>clip at <input class='pct' type='range' min='0' max='{len(PERCENTILES) - 1}' step='1' "
        f"value='{PERCENTILES.index(view.percentile)}'> <span class='pct-value'></span> percentile of |value|</label>"
        f"<label>colours <select class='mode'>{options}</select></label></div>"
    )


def write_report(path: str | os.PathLike[str], explanations: Any, **kwargs: Any) -> Path:
    """Write :func:`build_report` to ``path`` atomically (a temporary file renamed); returns the path.

    A failing build or write leaves an existing report untouched and no temporary file behind.
    """
    path = Path(path)
    page = build_report(explanations, **kwargs).encode("utf-8", "replace")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(page)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
