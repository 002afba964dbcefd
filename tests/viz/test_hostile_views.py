"""Every view survives real data: NaN / inf maps, empty explanations, huge photos and hostile text.

Views: ``Explanation.plot``, ``_repr_html_``, ``_repr_png_``, ``comparison_grid``,
``caption_plot``, ``build_report`` / ``write_report`` (and the report in headless
chromium). Built from hand-made Explanations; the huge-photo checks bound the
work (pixels coloured, traced allocations), not the wall time.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_report import CHROMIUM, CHROMIUM_ARGS, screenshot

import xai_bridge as xb
from xai_bridge.viz import notebook
from xai_bridge.viz._text import shown_label
from xai_bridge.viz._thumbs import shrink
from xai_bridge.viz.plot import PANEL_LABEL, PLOT_MAX_SIDE, caption_plot, comparison_grid, figure_png
from xai_bridge.viz.report import build_report, script_json, write_report
from xai_bridge.viz.report_data import decode_map, encode_map

H, W = 24, 32

HOSTILE = [
    "<!--<script>window.__pwned=1</script>",
    "</script><script>window.__pwned=2</script>",
    '<img src=x onerror="window.__pwned=3">',
    "$x^2$ and $\\frac{1}{$",
    "a $ b $$ c \\",
    "line\u2028sep\u2029para\nnext",
    "{{7*7}} {% if %} ${x}",
    "%s %d %(name)s {0}",
    "\u202eevil\u202c \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "'\"&amp;<>`",
    "\x00\x1b[31mred\x7f",
    "lone \udcff surrogate",
    "x" * 5000,
]
#: The labels a page shows literally (no control characters, short enough not to be cut).
LITERAL = [s for s in HOSTILE if shown_label(s) == s]


def blob(cy: float, cx: float, sign: float = 1.0) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return (sign * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 20.0)).astype(np.float32)


def explanation(
    maps: np.ndarray, names: list[str] | None = None, method: str = "captum.IntegratedGradients", **kw: Any
) -> xb.Explanation:
    n, t = maps.shape[:2]
    names = names or [f"class {i}" for i in range(t)]
    return xb.Explanation(
        attributions=maps,
        images=np.random.default_rng(0).integers(0, 256, (n, *maps.shape[2:], 3), dtype=np.uint8),
        targets=np.tile(np.arange(t), (n, 1)),
        target_names=np.array([names[:t]] * n, dtype=str).reshape(n, t),
        scores=np.ones((n, t), np.float32),
        method=method,
        library=method.split(".")[0],
        **kw,
    )


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def payload(page: str) -> dict[str, Any]:
    return json.loads(re.search(r"id='xb-data'>(.*?)</script>", page, re.S).group(1))  # type: ignore[union-attr]


def one_warning(caught: list[warnings.WarningMessage]) -> str:
    mine = [w for w in caught if "NaN or infinite" in str(w.message)]
    assert len(mine) == 1, [str(w.message) for w in caught]
    return str(mine[0].message)


# ------------------------------------------------------------------ NaN / inf


def nan_pair() -> tuple[xb.Explanation, xb.Explanation, np.ndarray]:
    """Maps with NaN and inf in a block, the same maps with 0 there, and where the block is."""
    maps = np.stack([blob(6, 8), blob(16, 22, -1.0)])[None]
    bad = np.zeros((H, W), bool)
    bad[2:10, 18:30] = True
    broken = maps.copy()
    broken[0, 0][bad] = np.nan
    broken[0, 1][bad] = np.where(np.arange(bad.sum()) % 2, np.inf, -np.inf)
    zeroed = maps.copy()
    zeroed[0, :, bad] = 0
    return explanation(broken), explanation(zeroed), bad


def is_hatch(pixels: np.ndarray) -> bool:
    """Black or white, grey-free (every channel equal), with both present."""
    flat = pixels.reshape(-1, 3)
    return bool(np.isin(flat, (0, 255)).all() and (flat == flat[:, :1]).all() and {0, 255} <= set(flat[:, 0]))


def test_non_finite_maps_are_hatched_and_the_rest_coloured_as_if_zero() -> None:
    broken, zeroed, _ = nan_pair()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        strip = png(broken._repr_png_())
    assert "_repr_png_" in one_warning(caught) and "captum.IntegratedGradients: 192" in one_warning(caught)
    reference = png(zeroed._repr_png_())
    assert strip.shape[0] == reference.shape[0] + 14  # the note's line below the strip
    side = 160
    scale = side / W  # the thumbnail enlarges 5x (nearest): the block maps to whole pixels
    rows, cols = slice(int(2 * scale), int(10 * scale)), slice(int(18 * scale), int(30 * scale))
    for t in range(2):
        x0 = (side + 4) * (t + 1)
        got, want = strip[:120, x0 : x0 + side], reference[:120, x0 : x0 + side]
        assert is_hatch(got[rows, cols])
        keep = np.ones(got.shape[:2], bool)
        keep[rows, cols] = False
        assert np.array_equal(got[keep], want[keep])


@pytest.mark.parametrize("view", ["plot", "_repr_html_", "comparison_grid", "report", "caption_plot"])
def test_every_view_warns_once_about_non_finite_maps(view: str) -> None:
    broken, _, _ = nan_pair()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if view == "plot":
            figure_png(broken.plot())
        elif view == "_repr_html_":
            assert "hatched: NaN or infinite values (192)" in broken._repr_html_()
        elif view == "comparison_grid":
            figure_png(comparison_grid({"a": broken, "b": broken}, per_target=True))
        elif view == "caption_plot":
            figure_png(caption_plot(broken))
        else:
            page = build_report(broken)
            assert "hatched: NaN or infinite values (192)" in page
    assert view in one_warning(caught)


def test_report_sends_non_finite_pixels_apart_and_scales_by_the_rest() -> None:
    broken, zeroed, bad = nan_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        maps = payload(build_report(broken))["sections"][0]["methods"][0]["targets"]
    want = payload(build_report(zeroed))["sections"][0]["methods"][0]["targets"]
    for got, ref in zip(maps, want, strict=True):
        assert got["png"] == ref["png"] and "bad" not in ref
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(got["bad"]))))
        assert np.array_equal(mask > 127, bad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        both = build_report({"broken": broken, "zeroed": zeroed})
    assert both.count("1.00<br><small>(1.00)</small>") == 8  # agreement: the broken pixels count as zero
    encoded, top = encode_map(np.array([[np.nan, np.inf], [-2.0, 1.0]]))
    assert top == 2.0 and np.allclose(decode_map(encoded), [[0, 0], [-1, 0.5]], atol=0.01)


# ------------------------------------------------------------------ empty


@pytest.mark.parametrize("shape", [(0, 2, H, W), (2, 0, H, W), (0, 0, H, W)])
def test_empty_explanations_show_an_empty_state(shape: tuple[int, ...]) -> None:
    exp = explanation(np.zeros(shape, np.float32), method="builtin.RISE")
    text = f"{shape[0]} image(s) x {shape[1]} target(s)"
    assert f"nothing to show: {text}" in exp._repr_html_()
    assert png(exp._repr_png_()).shape[0] > 0
    fig = exp.plot()
    assert any("nothing to show" in t.get_text() for t in fig.texts) and figure_png(fig)[:4] == b"\x89PNG"
    assert figure_png(comparison_grid({"a": exp, "b": exp}))[:4] == b"\x89PNG"
    page = build_report(exp)
    assert "</html>" in page
    if shape[0] == 0:
        assert "Nothing to show: the explanations hold 0 images." in page
    else:
        assert "no targets" in page and len(payload(page)["sections"]) == shape[0]
        figure_png(caption_plot(exp))


def test_report_of_a_full_and_an_empty_explanation_shows_the_full_one() -> None:
    full = explanation(np.stack([blob(6, 8), blob(16, 22)])[None])
    empty = explanation(np.zeros((1, 0, H, W), np.float32))
    empty = xb.Explanation(**{**empty.__dict__, "images": full.images})  # the same image, no targets
    page = build_report({"empty": empty, "full": full})
    assert "predicted class 0" in page and len(payload(page)["sections"][0]["methods"]) == 2
    fig = comparison_grid({"empty": empty, "full": full})
    assert [ax.get_title() for ax in fig.axes[:2]] == ["image", "full"]


# ------------------------------------------------------------------ huge photos


@pytest.fixture(scope="module")
def huge() -> xb.Explanation:
    """A 4000x4000 photo with two smooth maps (one with a NaN corner)."""
    side = 4000
    ramp = np.linspace(-1, 1, side, dtype=np.float32)
    maps = np.empty((1, 2, side, side), np.float32)
    maps[0, 0] = ramp[:, None] * ramp[None, :]
    maps[0, 1] = np.abs(ramp)[None, :]
    maps[0, 1, :300, :300] = np.nan
    image = np.empty((1, side, side, 3), np.uint8)
    image[0] = (np.arange(side, dtype=np.uint16) % 256).astype(np.uint8)[:, None, None]
    return xb.Explanation(
        attributions=maps,
        images=image,
        targets=[[0, 1]],
        target_names=[["a", "b"]],
        scores=[[1.0, 2.0]],
        method="captum.IntegratedGradients",
        library="captum",
    )


def test_huge_notebook_views_colour_only_what_they_show(huge: xb.Explanation, monkeypatch: Any) -> None:
    coloured: list[int] = []
    real = notebook.colorize

    def counting(image: np.ndarray, norm_map: np.ndarray, *args: Any) -> np.ndarray:
        coloured.append(int(np.size(norm_map)))
        return real(image, norm_map, *args)

    monkeypatch.setattr(notebook, "colorize", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tracemalloc.start()
        try:
            page = huge._repr_html_()
            strip = huge._repr_png_()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB traced"
    assert coloured == [128 * 128] * 2 + [160 * 160] * 2  # each target at the displayed size, nothing more
    assert png(strip)[:160, 164:324].std() > 10 and "hatched" in page  # a real picture, the NaN corner marked


def test_huge_report_and_plot_are_bounded(huge: xb.Explanation) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tracemalloc.start()
        try:
            page = build_report(huge, max_side=512)
            report_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            fig = huge.plot()
            plot_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            grid = comparison_grid({"a": huge, "b": huge}, per_target=True)
            tokens = caption_plot(huge)
            grid_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    section = payload(page)["sections"][0]
    assert (section["w"], section["h"]) == (512, 512) and "bad" in section["methods"][0]["targets"][1]
    assert report_peak < 100 * 2**20, f"report: {report_peak / 2**20:.0f} MiB traced"
    assert plot_peak < 100 * 2**20, f"plot: {plot_peak / 2**20:.0f} MiB traced"
    assert fig.axes[1].images[0].get_array().shape[:2] == (PLOT_MAX_SIDE, PLOT_MAX_SIDE)
    assert fig.axes[1].images[0].get_extent() == [-0.5, 3999.5, 3999.5, -0.5]  # boxes stay in pixel coordinates
    assert grid_peak < 100 * 2**20, f"comparison_grid + caption_plot: {grid_peak / 2**20:.0f} MiB traced"
    for figure in (grid, tokens):
        shown = figure.axes[1].images[0]
        assert shown.get_array().shape[:2] == (PLOT_MAX_SIDE, PLOT_MAX_SIDE) and shown.get_extent() == [
            -0.5,
            3999.5,
            3999.5,
            -0.5,
        ]


def test_shrink_is_a_block_mean_that_keeps_non_finite_blocks() -> None:
    values = np.random.default_rng(1).random((100, 130, 3)).astype(np.float32)
    shrunk = shrink(values, 20)  # factor 130 // 20 = 6: the last 4 rows and columns do not fill a block
    assert np.allclose(shrunk, values[:96, :126].reshape(16, 6, 21, 6, 3).mean(axis=(1, 3)), atol=1e-6)
    one = values[..., 0].copy()
    one[7, 13] = np.nan
    one[50, 50] = np.inf
    got = shrink(one, 20)
    assert np.isnan(got[1, 2]) and np.isinf(got[8, 8]) and np.isfinite(got).sum() == got.size - 2
    assert shrink(values, 66) is values  # under twice the side: untouched


# ------------------------------------------------------------------ hostile text


def hostile_exps() -> dict[str, xb.Explanation]:
    """Hostile names for targets, methods (dict keys), the caption and its tokens."""
    maps = np.stack([blob(4 + i % 4 * 5, 4 + i % 6 * 5) for i in range(len(HOSTILE))])[None]
    classes = explanation(maps, HOSTILE, extras={"probability": np.full((1, len(HOSTILE)), 0.5, np.float32)})
    caption = explanation(
        maps[:, :3],
        HOSTILE[:3],
        method="builtin.CaptionShap",
        params={"caption": HOSTILE[0], "caption_tokens": HOSTILE[:3]},
    )
    caption = xb.Explanation(**{**caption.__dict__, "images": caption.images[:, ::-1]})  # its own section
    return {HOSTILE[1]: classes, HOSTILE[3]: caption}


def test_hostile_text_in_notebook_views_and_figures() -> None:
    exps = hostile_exps()
    classes, caption = exps.values()
    page = classes._repr_html_()
    assert "<script" not in page and "<img src=x" not in page and "<!--" not in page
    assert all(html.escape(shown_label(s)) in page for s in HOSTILE[: notebook.MAX_TARGETS])
    assert png(classes._repr_png_()).shape[1] > 1000
    fig = classes.plot()
    figure_png(fig)  # mathtext would raise here on '$\frac{1}{$'
    titles = [ax.get_title() for ax in fig.axes[1 : len(HOSTILE) + 1]]
    assert titles == [f"{shown_label(s, PANEL_LABEL)}\np=0.50" for s in HOSTILE]
    grid = comparison_grid({HOSTILE[3]: classes, HOSTILE[4]: classes}, per_target=True)
    figure_png(grid)
    assert grid.axes[1].get_xlabel() == shown_label(HOSTILE[0], PANEL_LABEL)
    figure_png(caption_plot(caption))
    for s in HOSTILE:
        label = shown_label(s)
        assert "\n" not in label and "\u2028" not in label and "\u202e" not in label and len(label) <= 80


def test_hostile_text_in_the_report_stays_data(tmp_path: Path) -> None:
    page = build_report(hostile_exps(), title=HOSTILE[0], image_names=[HOSTILE[2], HOSTILE[5]])
    assert page.count("<script") == 2 and page.count("</script>") == 2 and "<!--" not in page
    data = re.search(r"id='xb-data'>(.*?)</script>", page, re.S).group(1)  # type: ignore[union-attr]
    assert not set("<>&") & set(data) and "\u2028" not in data
    names = [m["name"] for m in payload(page)["sections"][0]["methods"][0]["targets"]]
    assert names == [shown_label(s) for s in HOSTILE]
    assert json.loads(script_json({"s": "</script>&<!--"})) == {"s": "</script>&<!--"}
    assert write_report(tmp_path / "r.html", hostile_exps()).stat().st_size > 0


@pytest.mark.browser
def test_hostile_report_runs_no_script_and_shows_labels_literally(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    exps = hostile_exps()
    path = write_report(tmp_path / "hostile.html", exps, title=HOSTILE[0], image_names=[HOSTILE[2], HOSTILE[5]])
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_function(
                "document.querySelectorAll('section.image[data-ready]').length === 2", timeout=15_000
            )
            assert page.evaluate("window.__pwned") is None and not errors
            assert page.evaluate("window.xbDecoded") == len(HOSTILE) + 3
            assert page.title() == HOSTILE[0]
            tabs = page.evaluate(
                "Array.from(document.querySelectorAll('#image-0 .tabs button')).map(b => b.textContent)"
            )
            assert [t.split(". ", 1)[1].rsplit(" p=", 1)[0] for t in tabs] == [shown_label(s) for s in HOSTILE]
            assert all(shown_label(s) in tabs[i] for i, s in enumerate(HOSTILE) if s in LITERAL)
            page.click("#image-0 .tabs button[data-t='3']")
            caption = page.evaluate("document.querySelector('#image-0 figure[data-method=\"0\"] .tgt').textContent")
            assert caption.startswith(HOSTILE[3])
            screenshot(page, tmp_path / "hostile_report.png")
        finally:
            browser.close()


def test_png_view_survives_a_latin1_bitmap_font(monkeypatch: Any) -> None:
    """Without FreeType, PIL's default font is a Latin-1 bitmap font that raises on other characters."""
    from PIL import ImageDraw

    real = ImageDraw.ImageDraw.text
    drawn: list[str] = []

    def latin1_only(self: Any, xy: Any, text: str, *args: Any, **kwargs: Any) -> None:
        text.encode("latin-1")  # raises UnicodeEncodeError as the bitmap font does
        drawn.append(text)
        real(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", latin1_only)
    classes, _ = hostile_exps().values()
    assert png(classes[:, 8:]._repr_png_()).shape[1] > 600
    assert drawn[:3] == ["image", "evil ???? ?????", "'\"&amp;<>`"]


def test_a_library_without_a_version_of_its_own_is_named_once() -> None:
    """builtin methods carry ``library_version="builtin"``: the views say "builtin", not "builtin builtin"."""
    from xai_bridge.viz._text import library_text

    exp = explanation(np.ones((1, 1, 8, 8), np.float32), method="builtin.RISE", library_version="builtin")
    assert library_text(exp) == "builtin"
    assert "builtin builtin" not in exp._repr_html_()
    assert "builtin builtin" not in build_report([exp])
    other = explanation(np.ones((1, 1, 8, 8), np.float32), library_version="0.9.0")
    assert library_text(other) == "captum 0.9.0"
