"""The interactive HTML report: content, self-containment, user errors, and its controls in headless chromium.

Everything is built from hand-made Explanations (milliseconds); the browser
tests launch the Debian chromium once per module and read canvas pixels to
check that the controls really change what is drawn, against the same colour
rule computed here in numpy.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_explanation import make_explanation

import xai_bridge as xb
from xai_bridge.viz.colors import colorize
from xai_bridge.viz.report import PERCENTILES, _table, build_report, decode_map, encode_map, write_report

H, W = 24, 32
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def blob(cy: float, cx: float, sign: float = 1.0) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return (sign * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 20.0)).astype(np.float32)


def top3(method: str = "captum.IntegratedGradients", signed: bool = True) -> xb.Explanation:
    """One image, three targets whose maps are blobs in three different places (the third one negative)."""
    rng = np.random.default_rng(0)
    maps = np.stack([blob(6, 6), blob(12, 16), blob(18, 26, -1.0 if signed else 1.0)])[None]
    return xb.Explanation(
        attributions=maps,
        images=rng.integers(0, 256, (1, H, W, 3), dtype=np.uint8),
        targets=[[281, 285, 7]],
        target_names=[["tabby", "Egyptian cat", "cock"]],
        scores=[[9.0, 8.0, 2.0]],
        method=method,
        library=method.split(".")[0],
        library_version="1.0",
        seconds=3.0,
        n_model_evals=120,
        extras={"probability": np.array([[0.6, 0.3, 0.01]], np.float32)},
    )


def two_methods() -> dict[str, xb.Explanation]:
    ig = top3()
    cam = dataclasses.replace(top3("gradcam.GradCAM", signed=False), images=ig.images, seconds=0.5, n_model_evals=2)
    return {"captum.IntegratedGradients": ig, "gradcam.GradCAM": cam}


def caption_exps() -> list[xb.Explanation]:
    """What explain_caption returns: one Explanation per image, each with its own tokens."""
    out = []
    for i, words in enumerate((["a", "cat", "sitting"], ["two", "dogs"])):
        rng = np.random.default_rng(i)
        maps = np.stack([blob(4 + 6 * k, 4 + 8 * k) for k in range(len(words))])[None]
        out.append(
            xb.Explanation(
                attributions=maps,
                images=rng.integers(0, 256, (1, H, W, 3), dtype=np.uint8),
                targets=[list(range(len(words)))],
                target_names=[words],
                scores=[[-1.0] * len(words)],
                method="shap.Partition",
                library="shap",
                params={"caption": " ".join(words), "caption_tokens": words},
            )
        )
    return out


def payload(page: str) -> dict[str, Any]:
    return json.loads(re.search(r"id='xb-data'>(.*?)</script>", page, re.S).group(1).replace("<\\/", "</"))


def png_array(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def reference(image: np.ndarray, b64: str, signed: bool, pct: float, opacity: float) -> np.ndarray:
    """The report's colour rule in numpy, from the same embedded (quantised) map."""
    u = decode_map(png_array(b64))
    clip = float(np.percentile(np.abs(u), pct)) or 1.0
    m = np.clip(u / clip, -1, 1) if signed else np.clip(np.abs(u) / clip, 0, 1)
    return colorize(image, m, signed, opacity)


# ------------------------------------------------------------------ content


def test_report_is_self_contained_and_embeds_every_map() -> None:
    page = build_report(two_methods(), image_names=["cat.png"])
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert not re.search(r"src=['\"](?!data:)", page) and "<script src" not in page
    sources = re.findall(r"<img\b[^>]*\bsrc='data:image/png;base64,([^']*)'", page)
    assert len(sources) == 1 and np.array_equal(png_array(sources[0]), two_methods()["gradcam.GradCAM"].images[0])
    data = payload(page)
    [section] = data["sections"]
    assert (section["w"], section["h"]) == (W, H)
    ig_maps = [m["png"] for m in section["methods"][0]["targets"]]
    assert len(ig_maps) == 3
    for t, b64 in enumerate(ig_maps):  # the third target's map, not the first one's, sits at position 2
        decoded = decode_map(png_array(b64))
        truth = two_methods()["captum.IntegratedGradients"].attributions[0, t]
        np.testing.assert_allclose(decoded, truth / np.abs(truth).max(), atol=0.02)
    assert section["methods"][0]["signed"] is True and section["methods"][1]["signed"] is False
    assert page.count("<canvas") == 2 and len(page) < 60_000


def test_map_encoding_keeps_zero_sign_and_small_values() -> None:
    values = np.array([[0.0, 1.0, -1.0, 0.01, -0.25, 1e-3]])
    encoded, top = encode_map(values)
    assert top == 1.0 and encoded[0, 0] == 128
    decoded = decode_map(encoded)
    assert decoded[0, 0] == 0 and decoded[0, 1] == 1 and decoded[0, 2] == -1
    np.testing.assert_allclose(decoded[0, 3:], [0.01, -0.25, 1e-3], rtol=0.25, atol=1e-4)
    assert (encode_map(np.zeros((2, 2)))[0] == 128).all()


def test_report_names_targets_probabilities_costs_and_agreement() -> None:
    page = build_report(two_methods(), title="My <run>", image_names=["cat.png"])
    assert "<title>My &lt;run&gt;</title>" in page
    assert "cat.png: predicted tabby (p=0.60)" in page
    for t, (name, p) in enumerate([("tabby", "0.60"), ("Egyptian cat", "0.30"), ("cock", "0.01")]):
        assert f"<button type='button' data-t='{t}'" in page and f"{t + 1}. {name} <small>p={p}</small>" in page
    assert "<td>3.00</td><td>120</td><td>3.00</td><td>120</td>" in page  # IG: 1 image, seconds and evaluations
    assert "<td>0.50</td><td>2</td>" in page and page.count("per image</span>") == 2
    agree = re.findall(r"<div class='agree' data-t='(\d)'", page)
    assert agree == ["0", "1", "2"]  # one heatmap per target
    assert "Spearman rank correlation" in page and ">captum.IntegratedGradients</th>" in page
    # the IG and CAM maps of every target are the same blobs up to sign: |.| ranks agree fully
    assert page.count("1.00<br><small>(1.00)</small>") == 3 * 4


def test_report_shows_metrics_and_refuses_the_agreement_table() -> None:
    from xai_bridge.viz.compare import agreement_table

    metrics = pd.DataFrame(
        {
            "method": ["captum.IntegratedGradients", "gradcam.GradCAM", "gradcam.GradCAM"],
            "metric": ["deletion", "deletion", "insertion"],
            "image": [0, 0, 0],
            "target": [281, 281, 281],
            "value": [0.25, 0.5, 0.75],
        }
    )
    page = build_report(two_methods(), metrics=metrics)
    section = page.split("<h2>Metrics</h2>", 1)[1]
    assert "<th>method</th><th>deletion</th><th>insertion</th>" in section
    assert '<td class="l">gradcam.GradCAM</td><td class="">0.500</td><td class="">0.750</td>' in section
    assert "Metrics of this image" in page
    with pytest.raises(xb.ParameterError, match=r"^metrics: .*got the agreement table .*pass metrics=evaluate"):
        build_report(two_methods(), metrics=agreement_table(two_methods()))
    with pytest.raises(xb.ParameterError, match="metrics: expected the DataFrame"):
        build_report(two_methods(), metrics=[1, 2])


def test_report_user_errors_are_one_clear_line(tmp_path: Path) -> None:
    exp = top3()
    with pytest.raises(xb.ParameterError, match=r"image_names: expected 2 names \(one per image\), got 1"):
        build_report([exp, dataclasses.replace(exp, images=255 - exp.images)], image_names=["only.png"])
    with pytest.raises(xb.ParameterError, match="at least one"):
        build_report({})
    with pytest.raises(xb.ParameterError, match="expected Explanations, got str"):
        build_report({"a": "not an explanation"})
    with pytest.raises(xb.ParameterError, match="percentile: expected one of"):
        build_report(exp, percentile=97)
    with pytest.raises(xb.ParameterError, match="norm:"):
        build_report(exp, norm="minmax")
    assert all(isinstance(e, xb.XaiBridgeError) for e in [xb.ParameterError("x")])


def test_non_utf8_names_are_written_and_failures_leave_nothing(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.png")  # a Latin-1 file name: a lone surrogate in Python
    path = write_report(tmp_path / "r.html", top3(), image_names=[name], title=os.fsdecode(b"run \xff"))
    text = path.read_text(encoding="utf-8")
    assert "caf\ufffd.png" in text and "<title>run \ufffd</title>" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    with pytest.raises(xb.ParameterError):
        write_report(path, top3(), image_names=["a", "b"])  # the old report stays, no temporary file
    assert "caf\ufffd.png" in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    odd_path = tmp_path / os.fsdecode(b"rep\xe9.html")  # a non-UTF-8 output file name works too
    assert write_report(odd_path, top3()).exists()


def test_caption_explanations_get_a_section_each_with_token_tabs() -> None:
    page = build_report(caption_exps())
    assert page.count("<section class='image'") == 2
    assert "caption &ldquo;a cat sitting&rdquo;" in page and "caption &ldquo;two dogs&rdquo;" in page
    assert "token: <button" in page and ">sitting</button>" in page and ">dogs</button>" in page
    assert [len(s["methods"][0]["targets"]) for s in payload(page)["sections"]] == [3, 2]


# ------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def browser() -> Any:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_report(browser: Any, path: Path) -> tuple[Any, list[str]]:
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_function(
        "document.querySelectorAll('section.image[data-ready]').length === "
        "document.querySelectorAll('section.image').length",
        timeout=15_000,
    )
    return page, errors


def canvas(page: Any, section: int, method: int) -> np.ndarray:
    flat = page.evaluate(
        "([s, m]) => { const c = document.querySelector(`#image-${s} figure[data-method='${m}'] canvas`);"
        " return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }",
        [section, method],
    )
    return np.asarray(flat, np.uint8).reshape(H, W, 4)[..., :3]


def screenshot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("XAI_BRIDGE_SCREENSHOTS")  # set it to look at the pictures yourself
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def close_enough(drawn: np.ndarray, expected: np.ndarray) -> bool:
    diff = np.abs(drawn.astype(int) - expected.astype(int))
    return bool(diff.max() <= 3 and (diff > 1).mean() < 0.02)


@pytest.mark.browser
def test_report_controls_in_headless_chromium(browser: Any, tmp_path: Path) -> None:
    exps = two_methods()
    path = write_report(tmp_path / "report.html", exps, image_names=["cat.png"])
    data = payload(path.read_text())["sections"][0]
    page, errors = open_report(browser, path)
    try:
        decoded = page.evaluate(
            "[window.xbDecoded, window.xbMaps, Array.from(document.images).map(i => i.complete && i.naturalWidth)]"
        )
        assert decoded[0] == decoded[1] == 6 and decoded[2] == [W]  # every map and image decoded
        image = exps["gradcam.GradCAM"].images[0]
        ig, cam = data["methods"]
        first = canvas(page, 0, 0)
        assert close_enough(first, reference(image, ig["targets"][0]["png"], True, 99.0, 0.8))
        assert close_enough(canvas(page, 0, 1), reference(image, cam["targets"][0]["png"], False, 99.0, 0.8))
        screenshot(page, tmp_path / "report_target1.png")

        page.locator("#image-0 .tabs button").nth(2).click()  # the third target of the top-3 run
        third = canvas(page, 0, 0)
        assert not close_enough(third, first)
        assert close_enough(third, reference(image, ig["targets"][2]["png"], True, 99.0, 0.8))
        assert close_enough(canvas(page, 0, 1), reference(image, cam["targets"][2]["png"], False, 99.0, 0.8))
        assert page.locator("#image-0 figure[data-method='0'] .tgt").inner_text() == "cock · p=0.01"
        assert page.locator("#image-0 .agree:not([hidden])").get_attribute("data-t") == "2"
        # negative evidence is drawn blue where the blob is (the map of "cock" is negative)
        y, x = 18, 26
        assert third[y, x, 2] > third[y, x, 0] and first[y, x].tolist() == image[y, x].tolist()  # 0: the image
        screenshot(page, tmp_path / "report_target3.png")

        page.locator("#image-0 input.opacity").fill("30")  # the opacity slider
        faded = canvas(page, 0, 0)
        assert not np.array_equal(faded, third)
        assert close_enough(faded, reference(image, ig["targets"][2]["png"], True, 99.0, 0.3))
        assert page.locator("#image-0 .op-value").inner_text() == "30%"

        page.locator("#image-0 input.pct").fill(str(PERCENTILES.index(90.0)))  # clip at the 90th percentile
        assert close_enough(canvas(page, 0, 0), reference(image, ig["targets"][2]["png"], True, 90.0, 0.3))
        page.locator("#image-0 select.mode").select_option("abs")  # |value|: the negative blob turns sequential
        absolute = canvas(page, 0, 0)
        assert close_enough(absolute, reference(image, ig["targets"][2]["png"], False, 90.0, 0.3))
        assert "unsigned |value|" in page.locator("#image-0 .legend").inner_text()
    finally:
        page.close()
    assert errors == []


@pytest.mark.browser
def test_caption_token_selector_in_headless_chromium(browser: Any, tmp_path: Path) -> None:
    exps = caption_exps()
    path = write_report(tmp_path / "captions.html", exps)
    sections = payload(path.read_text())["sections"]
    page, errors = open_report(browser, path)
    try:
        assert page.evaluate("[window.xbDecoded, window.xbMaps]") == [5, 5]
        before = canvas(page, 0, 0)
        page.locator("#image-0 .tabs button", has_text="sitting").click()
        after = canvas(page, 0, 0)
        image = exps[0].images[0]
        assert not close_enough(after, before)
        assert close_enough(after, reference(image, sections[0]["methods"][0]["targets"][2]["png"], True, 99.0, 0.8))
        assert page.locator("#image-0 figure[data-method='0'] .tgt").inner_text() == "sitting · score -1"
        assert close_enough(
            canvas(page, 1, 0),
            reference(exps[1].images[0], sections[1]["methods"][0]["targets"][0]["png"], True, 99.0, 0.8),
        )
        screenshot(page, tmp_path / "report_caption.png")
    finally:
        page.close()
    assert errors == []


def three_methods() -> dict[str, xb.Explanation]:
    exp = make_explanation()  # 2 images x 3 targets, names "class 0".."class 5", 123 evals, 0.30 s
    return {
        "captum.IntegratedGradients": exp,
        "lib.B": dataclasses.replace(exp, method="lib.B", seconds=1.25, n_model_evals=42),
        "lib.C": dataclasses.replace(
            exp, method="lib.C", attributions=-exp.attributions, raw=None, seconds=7.5, n_model_evals=9
        ),
    }


def img_sources(page: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc='([^']*)'", page)


# ------------------------------------------------------------------ report


def test_report_renders_the_metrics_pivot() -> None:
    metrics = pd.DataFrame(
        {
            "method": ["lib.B", "lib.B", "lib.C", "lib.B"],
            "metric": ["deletion", "deletion", "deletion", "insertion"],
            "image": [0, 1, 0, 0],
            "value": [0.25, 0.75, 0.125, 0.9],
        }
    )
    page = build_report(three_methods(), metrics=metrics)
    section = page.split("<h2>Metrics</h2>", 1)[1]
    assert "<th>method</th><th>deletion</th><th>insertion</th>" in section
    assert '<td class="l">lib.B</td><td class="">0.500</td><td class="">0.900</td>' in section  # mean of images
    assert '<td class="l">lib.C</td><td class="">0.125</td><td class="">nan</td>' in section
    assert "<h2>Metrics</h2>" not in build_report(three_methods(), metrics=metrics.iloc[:0])


def test_table_keeps_integer_columns_integer() -> None:
    html = _table(pd.DataFrame({"target": [3, 12], "value": [0.5, 0.25]}))
    assert ">3<" in html and ">12<" in html and "3.000" not in html and ">0.250<" in html


def test_write_report_is_atomic(tmp_path: Path) -> None:
    path = write_report(tmp_path / "sub" / "r.html", three_methods(), title="first")
    assert path == tmp_path / "sub" / "r.html" and "<title>first</title>" in path.read_text()
    write_report(path, three_methods(), title="second")  # replaces the file
    assert "<title>second</title>" in path.read_text()
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.html"]  # no temporary file left
    with pytest.raises(ValueError):
        write_report(path, {})  # a failing build leaves the old report untouched
    assert "<title>second</title>" in path.read_text()
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.html"]


# ------------------------------------------------------------------ CLI
