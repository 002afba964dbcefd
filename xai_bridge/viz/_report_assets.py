"""The style sheet and script that :mod:`.report` embeds in every page (no CDN: the page opens offline)."""

#: The report's style sheet; ``%(px)d`` is the panel width.
CSS = """
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

#: The report's script: decodes the embedded maps and colours them in the browser, per section.
JS = r"""
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
      return Promise.all([mask(m.outline, w, h), mask(m.bad, w, h)]).then(function (masks) {
        m.o = masks[0];
        m.b = masks[1];
      });
    });
  }

  function mask(png, w, h) {
    // a 0/255 PNG (outlines, NaN or infinite pixels) as 0/1 per pixel; none: null
    if (!png) { return Promise.resolve(null); }
    return pixelsOf("data:image/png;base64," + png, w, h).then(function (op) {
      const o = new Uint8Array(w * h);
      for (let i = 0; i < o.length; i++) { o[i] = op[4 * i] > 127 ? 1 : 0; }
      return o;
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
    if (m.o) {  // outlines: a detection's box, semantic regions' borders
      for (let i = 0; i < m.o.length; i++) {
        if (m.o[i]) { const j = 4 * i; d[j] = 255; d[j + 1] = 255; d[j + 2] = 255; }
      }
    }
    if (m.b) {  // NaN or infinite values: black and white diagonal stripes, as in the figures
      for (let i = 0; i < m.b.length; i++) {
        if (m.b[i]) {
          const j = 4 * i, v = ((((i % sec.w) + Math.floor(i / sec.w)) >> 1) & 1) ? 255 : 0;
          d[j] = v; d[j + 1] = v; d[j + 2] = v;
        }
      }
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
