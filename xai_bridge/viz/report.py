"""An interactive, self-contained HTML report: every image, target and method, costs, agreement, metrics.

One file that opens offline (no CDN, no server): images and maps are
embedded as base64 PNG, and a small vanilla script does the colouring in
the browser, so each image's section has target (or caption token) tabs, an
opacity slider, a clip-percentile control and a signed/|value| switch. Maps
are stored quantised to 8 bits on a square-root scale (``sign(v) *
sqrt(|v| / max|v|)``), which keeps small values distinguishable and the file
small; the colour rule is the one of :mod:`xai_bridge.viz.colors`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xai_bridge.errors import ParameterError
from xai_bridge.explanation import Explanation
from xai_bridge.normalization import Norm

from ._text import probabilities, safe_text, score_text
from .colors import BLUE, DEFAULT_OPACITY, RED, sequential_lut, signed_maps

__all__ = ["PERCENTILES", "build_report", "decode_map", "encode_map", "write_report"]

#: Clip percentiles offered by the report's control.
PERCENTILES = (90.0, 95.0, 98.0, 99.0, 99.5, 99.9, 100.0)
#: Panels are drawn at least this wide (CSS pixels), whatever the image size.
PANEL_PX = 288

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff;max-width:1800px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin:0 0 8px}
section.image{border-top:2px solid #ddd;margin-top:28px;padding-top:14px}
.row{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0;font-size:12px;width:%(px)dpx}
figure img,figure canvas{width:%(px)dpx;height:auto;border:1px solid #ccc;display:block;image-rendering:auto}
figcaption{margin-top:3px;line-height:1.35} figcaption b{font-size:13px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.note{color:#555;font-size:12px;max-width:1100px}
.controls{display:flex;flex-wrap:wrap;gap:18px;align-items:center;font-size:13px;margin:6px 0 10px;
  padding:6px 10px;background:#f6f6f6;border-radius:6px}
.tabs button{margin:2px;padding:3px 9px;border:1px solid #bbb;background:#fff;border-radius:4px;cursor:pointer;font-size:13px}
.tabs button.on{background:#234;color:#fff;border-color:#234}
.tabs button small{opacity:.75}
.legend{display:flex;flex-wrap:wrap;gap:22px;font-size:12px;margin:4px 0 10px}
.bar{width:220px;height:12px;border:1px solid #aaa;margin-top:2px}
.ends{display:flex;justify-content:space-between;width:222px;color:#555}
.agree td.v{width:64px;text-align:center}
.caption{font-size:15px;margin:4px 0}
"""

_JS = r"""
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("xb-data").textContent);
  const RED = data.red, BLUE = data.blue, SEQ = data.seq;
  let pending = 0;
  window.xbDecoded = 0;
  window.xbErrors = [];

  function pixelsOf(src, w, h) {
    return new Promise(function (resolve, reject) {
      const img = new Image();
      img.onload = function () {
        const c = document.createElement("canvas");
        c.width = w; c.height = h;
        const ctx = c.getContext("2d");
        ctx.drawImage(img, 0, 0);
        resolve(ctx.getImageData(0, 0, w, h).data);
      };
      img.onerror = function () { reject(new Error("could not decode an embedded map")); };
      img.src = src;
    });
  }

  function decodeMap(m, w, h) {
    // 8-bit square-root companding: u = sign(q) * q^2 with q = (byte - 128) / 127
    return pixelsOf("data:image/png;base64," + m.png, w, h).then(function (px) {
      const u = new Float32Array(w * h);
      for (let i = 0; i < u.length; i++) {
        const q = (px[4 * i] - 128) / 127;
        u[i] = q < 0 ? -q * q : q * q;
      }
      m.u = u;
      window.xbDecoded++;
    });
  }

  function percentile(m, p) {
    // numpy's default (linear) percentile of |u|
    if (!m.sorted) {
      m.sorted = Float32Array.from(m.u, Math.abs).sort();
    }
    const a = m.sorted, idx = (p / 100) * (a.length - 1), lo = Math.floor(idx), hi = Math.ceil(idx);
    return a[lo] + (a[hi] - a[lo]) * (idx - lo);
  }

  function ruleText(signed, p) {
    const what = signed ? "signed (red for, blue against)" : "unsigned |value|";
    const clip = p >= 100 ? "clipped at the maximum |value|" : "clipped at the " + p + "th percentile of |value|";
    return what + ", " + clip + ", per map";
  }

  function render(sec, panel) {
    const st = sec.state, meth = panel.method, m = meth.targets[st.t];
    const cap = panel.fig.querySelector(".tgt");
    const ctx = panel.canvas.getContext("2d");
    if (!m) {
      ctx.clearRect(0, 0, sec.w, sec.h);
      cap.textContent = "(no target " + (st.t + 1) + ")";
      return;
    }
    cap.textContent = m.name + (m.score ? " \u00b7 " + m.score : "");
    if (!m.u) { return; }
    const signed = st.mode === "auto" ? meth.signed : st.mode === "signed";
    let c = percentile(m, st.pct);
    if (!(c > 0)) { c = 1; }
    const out = ctx.createImageData(sec.w, sec.h), d = out.data, img = sec.pixels, u = m.u, op = st.opacity;
    for (let i = 0; i < u.length; i++) {
      let v = u[i] / c, col, a;
      if (signed) {
        v = v > 1 ? 1 : (v < -1 ? -1 : v);
        col = v >= 0 ? RED : BLUE;
        a = op * Math.abs(v);
      } else {
        v = Math.abs(v);
        v = v > 1 ? 1 : v;
        const k = 3 * Math.round(v * 255);
        col = [SEQ[k], SEQ[k + 1], SEQ[k + 2]];
        a = op * v;
      }
      const j = 4 * i;
      d[j] = img[j] * (1 - a) + col[0] * a;
      d[j + 1] = img[j + 1] * (1 - a) + col[1] * a;
      d[j + 2] = img[j + 2] * (1 - a) + col[2] * a;
      d[j + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
  }

  function update(sec) {
    const st = sec.state;
    sec.el.querySelectorAll(".tabs button").forEach(function (b) {
      b.classList.toggle("on", Number(b.dataset.t) === st.t);
    });
    sec.el.querySelectorAll(".agree").forEach(function (a) { a.hidden = Number(a.dataset.t) !== st.t; });
    sec.el.querySelector(".pct-value").textContent = st.pct >= 100 ? "max" : st.pct + "th";
    sec.el.querySelector(".op-value").textContent = Math.round(st.opacity * 100) + "%";
    const kinds = {};
    sec.panels.forEach(function (p) {
      const signed = st.mode === "auto" ? p.method.signed : st.mode === "signed";
      (kinds[signed] = kinds[signed] || []).push(p.method.name);
    });
    sec.el.querySelectorAll(".legend > div").forEach(function (l) {
      const names = kinds[l.dataset.signed === "1"];
      l.hidden = !names;
      if (names) {
        l.querySelector(".rule").textContent = ruleText(l.dataset.signed === "1", st.pct)
          + (Object.keys(kinds).length > 1 ? " (" + names.join(", ") + ")" : "");
      }
    });
    sec.panels.forEach(function (p) { render(sec, p); });
  }

  data.sections.forEach(function (s, si) {
    const el = document.getElementById("image-" + si);
    const sec = { el: el, w: s.w, h: s.h, panels: [],
      state: { t: 0, opacity: data.opacity, pct: data.percentile, mode: data.mode } };
    s.methods.forEach(function (meth, mi) {
      const fig = el.querySelector('figure[data-method="' + mi + '"]');
      sec.panels.push({ method: meth, fig: fig, canvas: fig.querySelector("canvas") });
    });
    el.querySelectorAll(".tabs button").forEach(function (b) {
      b.addEventListener("click", function () { sec.state.t = Number(b.dataset.t); update(sec); });
    });
    el.querySelector("input.opacity").addEventListener("input", function (e) {
      sec.state.opacity = Number(e.target.value) / 100; update(sec);
    });
    el.querySelector("input.pct").addEventListener("input", function (e) {
      sec.state.pct = data.percentiles[Number(e.target.value)]; update(sec);
    });
    el.querySelector("select.mode").addEventListener("change", function (e) {
      sec.state.mode = e.target.value; update(sec);
    });
    const input = el.querySelector("img.input");
    const jobs = [pixelsOf(input.src, s.w, s.h).then(function (px) { sec.pixels = px; })];
    s.methods.forEach(function (meth) {
      meth.targets.forEach(function (m) { if (m) { pending++; jobs.push(decodeMap(m, s.w, s.h)); } });
    });
    Promise.all(jobs).then(function () { update(sec); sec.el.dataset.ready = "1"; },
      function (err) { window.xbErrors.push(String(err)); console.error(String(err)); });
    update(sec);
  });
  window.xbMaps = pending;
})();
"""


def _png(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def encode_map(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Quantise a map to uint8 on a square-root scale; returns ``(bytes, max |value|)``.

    ``byte = 128 + round(127 * sign(v) * sqrt(|v| / max|v|))``: 0 stays 128
    exactly, and values down to ~1e-4 of the maximum stay distinguishable.
    """
    v = np.nan_to_num(np.asarray(values, np.float64))
    top = float(np.max(np.abs(v))) if v.size else 0.0
    q = np.sign(v) * np.sqrt(np.abs(v) / top) if top > 0 else np.zeros_like(v)
    return (128 + np.rint(127 * q)).astype(np.uint8), top


def decode_map(encoded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_map` up to the maximum: values in [-1, 1] (``sign(q) * q**2``)."""
    q = (np.asarray(encoded, np.float64) - 128) / 127
    return np.sign(q) * q * q


def _fit(array: np.ndarray, max_side: int, is_map: bool) -> np.ndarray:
    """Shrink images (Lanczos) and maps (box average) whose longer side exceeds ``max_side``."""
    h, w = array.shape[:2]
    if max(h, w) <= max_side:
        return array
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if is_map:
        return np.asarray(Image.fromarray(np.asarray(array, np.float32), mode="F").resize(size, Image.Resampling.BOX))
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS))


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


@dataclass
class _Section:
    """One image of the report and every (method name, Explanation, image index) that explains it."""

    image: np.ndarray
    entries: list[tuple[str, Explanation, int]] = field(default_factory=list)


def _named(explanations: Any) -> list[tuple[str, Explanation]]:
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


def _sections(items: list[tuple[str, Explanation]]) -> list[_Section]:
    """Group every explained image by its pixels, in order of first appearance."""
    sections: dict[bytes, _Section] = {}
    for name, exp in items:
        for n in range(exp.n_images):
            img = exp.images[n]
            key = hashlib.sha1(repr(img.shape).encode() + img.tobytes()).digest()
            sec = sections.setdefault(key, _Section(img))
            if any(other == name for other, _, _ in sec.entries):
                raise ParameterError(
                    f"explanations: two explanations named {name!r} explain the same image; pass a dict "
                    "{name: Explanation} with distinct names"
                )
            sec.entries.append((name, exp, n))
    return list(sections.values())


def _check_metrics(metrics: Any) -> Any:
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


def _colour(value: float) -> str:
    """Background of an agreement cell: red for agreement, blue for disagreement, white for none."""
    if not np.isfinite(value):
        return "#eee"
    a = min(1.0, abs(value)) * 0.75
    base = RED if value >= 0 else BLUE
    r, g, b = (round(255 * (1 - a) + c * a) for c in base)
    return f"rgb({r},{g},{b})"


def _agreement_html(sec: _Section, t: int, percent: float = 10.0) -> str:
    """The method x method heatmap of one target position of one image."""
    from .compare import rank_correlation, top_k_iou

    rows = [(name, exp, n) for name, exp, n in sec.entries if t < exp.n_targets]
    if len(rows) < 2:
        return ""
    names = [name for name, _, _ in rows]
    head = "<tr><th></th>" + "".join(f"<th>{html.escape(x)}</th>" for x in names) + "</tr>"
    body = []
    for name_a, ea, na in rows:
        cells = []
        for name_b, eb, nb in rows:
            if name_a == name_b:
                rho, iou = 1.0, 1.0
            elif ea.targets[na, t] != eb.targets[nb, t]:
                rho = iou = float("nan")  # different classes are not compared
            else:
                ma, mb = ea.attributions[na, t], eb.attributions[nb, t]
                rho, iou = rank_correlation(ma, mb), top_k_iou(ma, mb, percent)
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


def _is_caption(exp: Explanation) -> bool:
    return "caption" in exp.params and "caption_tokens" in exp.params


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

    Raises:
        ParameterError: no explanations, wrong ``image_names`` length, a
            table other than :func:`evaluate`'s as ``metrics``, a bad ``norm``
            or ``percentile``.
    """
    items = _named(explanations)
    sections = _sections(items)
    mode = "auto" if norm is None else Norm(norm).value
    if mode not in ("auto", "signed", "abs"):
        raise ParameterError(f"norm: expected None, 'signed' or 'abs' for the report, got {norm!r}")
    if float(percentile) not in PERCENTILES:
        raise ParameterError(f"percentile: expected one of {list(PERCENTILES)}, got {percentile!r}")
    if image_names is not None:
        image_names = [safe_text(x) for x in image_names]
        if len(image_names) != len(sections):
            raise ParameterError(
                f"image_names: expected {len(sections)} names (one per image), got {len(image_names)}; "
                "pass one name per image or leave it out"
            )
    if metrics is not None:
        metrics = _check_metrics(metrics)
    esc = lambda v: html.escape(safe_text(v))  # noqa: E731
    names = image_names or [f"image {i}" for i in range(len(sections))]
    signed = {name: signed_maps(exp) for name, exp in items}
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{_CSS % {'px': PANEL_PX}}</style></head><body><h1>{esc(title)}</h1>",
        f"<p class='note'>{len(sections)} image(s), {len(items)} explanation(s). Each map is coloured by one rule: "
        "methods whose maps carry a sign (evidence for and against the target) on a diverging scale, red for and "
        "blue against; unsigned methods on a green-yellow scale. Opacity grows with |value| (zero shows the image), "
        "clipped per map at a percentile of |value|. Per image: pick the target (or caption token), the opacity, "
        "the clip percentile, and signed or |value| colours.</p>",
    ]
    cost = "".join(
        f"<tr><td class='l'>{esc(name)}</td><td class='l'>{esc(exp.library)} {esc(exp.library_version)}</td>"
        f"<td class='l'>{'signed' if signed[name] else 'unsigned'}</td><td>{exp.n_images}</td>"
        f"<td>{exp.seconds:.2f}</td><td>{exp.n_model_evals}</td>"
        f"<td>{exp.seconds / max(exp.n_images, 1):.2f}</td><td>{exp.n_model_evals / max(exp.n_images, 1):.0f}</td></tr>"
        for name, exp in items
    )
    parts.append(
        "<h2>Methods</h2><table><tr><th class='l'>method</th><th class='l'>library</th><th class='l'>maps</th>"
        "<th>images</th><th>seconds</th><th>model evaluations</th><th>seconds / image</th>"
        f"<th>evaluations / image</th></tr>{cost}</table>"
        "<p class='note'>Seconds and evaluations are for the whole call; per image they are the call's share.</p>"
    )
    if metrics is not None and len(metrics):
        pivot = metrics.pivot_table(index=["method"], columns="metric", values="value", aggfunc="mean").reset_index()
        pivot.columns = [str(c) for c in pivot.columns]
        parts.append("<h2>Metrics</h2><p class='note'>Mean over images and targets.</p>" + _table(pivot))
    payload: dict[str, Any] = {
        "red": list(RED),
        "blue": list(BLUE),
        "seq": sequential_lut().ravel().tolist(),
        "opacity": float(opacity),
        "percentile": float(percentile),
        "percentiles": list(PERCENTILES),
        "mode": mode,
        "sections": [],
    }
    for i, sec in enumerate(sections):
        parts.append(_section_html(i, sec, names[i], signed, payload, metrics, max_side, opacity, percentile, mode))
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    parts.append(f"<script type='application/json' id='xb-data'>{data}</script><script>{_JS}</script></body></html>")
    return "".join(parts)


def _section_html(
    i: int,
    sec: _Section,
    label: str,
    signed: Mapping[str, bool],
    payload: dict[str, Any],
    metrics: Any,
    max_side: int,
    opacity: float,
    percentile: float,
    mode: str,
) -> str:
    """One image: heading, controls, legend, the input and every method's canvas, agreement and metrics."""
    esc = lambda v: html.escape(safe_text(v))  # noqa: E731
    image = _fit(sec.image, max_side, is_map=False)
    h, w = image.shape[:2]
    _, first, n0 = sec.entries[0]
    caption = _is_caption(first)
    n_tabs = max(exp.n_targets for _, exp, _ in sec.entries)
    methods = []
    figures = []
    for mi, (name, exp, n) in enumerate(sec.entries):
        targets: list[dict[str, str] | None] = []
        for t in range(n_tabs):
            if t >= exp.n_targets:
                targets.append(None)
                continue
            encoded, _ = encode_map(_fit(exp.attributions[n, t], max_side, is_map=True))
            targets.append(
                {
                    "png": _png(encoded),
                    "name": safe_text(exp.target_names[n, t]),
                    "score": score_text(exp, n, t),
                }
            )
        methods.append({"name": name, "signed": bool(signed[name]), "targets": targets})
        per_image = f"{exp.seconds / max(exp.n_images, 1):.2f} s, {exp.n_model_evals / max(exp.n_images, 1):.0f} evals"
        figures.append(
            f"<figure data-method='{mi}'><canvas width='{w}' height='{h}' aria-label='{esc(name)}'></canvas>"
            f"<figcaption><b>{esc(name)}</b><br><span class='tgt'></span><br>"
            f"<span class='cost'>{per_image} per image</span></figcaption></figure>"
        )
    payload["sections"].append({"w": w, "h": h, "methods": methods})
    tabs = []
    probs = probabilities(first)
    for t in range(n_tabs):
        owner = next((exp, n) for _, exp, n in sec.entries if t < exp.n_targets)
        exp, n = owner
        sub = score_text(exp, n, t)
        text = esc(exp.target_names[n, t])
        tabs.append(
            f"<button type='button' data-t='{t}'{' class=on' if t == 0 else ''}>"
            f"{'' if caption else f'{t + 1}. '}{text}{f' <small>{esc(sub)}</small>' if sub and not caption else ''}"
            "</button>"
        )
    top = f"{esc(first.target_names[n0, 0])}"
    if probs is not None:
        top += f" (p={probs[n0, 0]:.2f})"
    heading = f"caption &ldquo;{esc(first.params.get('caption', ''))}&rdquo;" if caption else f"predicted {top}"
    pct_index = PERCENTILES.index(float(percentile))
    controls = (
        "<div class='controls'>"
        f"<div class='tabs'>{'token' if caption else 'target'}: {''.join(tabs)}</div>"
        f"<label>opacity <input class='opacity' type='range' min='0' max='100' value='{round(opacity * 100)}'> "
        "<span class='op-value'></span></label>"
        f"<label>clip at <input class='pct' type='range' min='0' max='{len(PERCENTILES) - 1}' step='1' "
        f"value='{pct_index}'> <span class='pct-value'></span> percentile of |value|</label>"
        "<label>colours <select class='mode'>"
        + "".join(
            f"<option value='{v}'{' selected' if v == mode else ''}>{text}</option>"
            for v, text in (("auto", "each method's own"), ("signed", "signed (red/blue)"), ("abs", "|value|"))
        )
        + "</select></label></div>"
    )
    agreement = "".join(_agreement_html(sec, t) for t in range(n_tabs))
    metric_html = ""
    if metrics is not None and len(metrics) and "image" in metrics.columns:
        rows = []
        for name, exp, n in sec.entries:
            sub = metrics[(metrics["method"] == exp.method) & (metrics["image"] == n)]
            if len(sub):
                means = sub.groupby("metric")["value"].mean()
                rows.append({"method": name, **{str(k): float(v) for k, v in means.items()}})
        if rows:
            import pandas as pd

            metric_html = "<p class='note'>Metrics of this image (mean over its targets):</p>" + _table(
                pd.DataFrame(rows)
            )
    return (
        f"<section class='image' id='image-{i}'><h2>{esc(label)}: {heading}</h2>{controls}{_legend(opacity)}"
        f"<div class='row'><figure><img class='input' alt='{esc(label)}' src='data:image/png;base64,{_png(image)}'>"
        f"<figcaption><b>input</b><br>{w}x{h}</figcaption></figure>{''.join(figures)}</div>"
        f"{agreement}{metric_html}</section>"
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
