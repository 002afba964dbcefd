"""The HTML report (content, self-contained, atomic, in headless chromium) and the CLI end to end.

CLI runs use the tiny seeded net of tests/cli_models.py on two 16x16 PNG files.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import make_pngs
from PIL import Image
from test_explanation import make_explanation

import xai_bridge as xb
from xai_bridge.cli import main
from xai_bridge.viz.report import _table, build_report, write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


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
@pytest.fixture
def pngs(tmp_path: Path) -> list[Path]:
    return make_pngs(tmp_path / "images", size=16)


def run(*args: str):
    return CliRunner().invoke(main, list(map(str, args)))


def test_methods_lists_install_status() -> None:
    result = run("methods")
    assert result.exit_code == 0, result.output
    assert re.search(r"^builtin\.Saliency\s+gradient\s+installed: yes$", result.output, re.M)
    assert re.search(r"^builtin\.Occlusion\s+perturbation\s+installed: yes$", result.output, re.M)
    cams = run("methods", "--family", "cam", "--installed")
    assert cams.exit_code == 0 and "builtin." not in cams.output
    assert all(" cam " in line and "installed: yes" in line for line in cams.output.splitlines())
    assert run("methods", "--family", "nope").exit_code != 0


@pytest.mark.parametrize("spec", ["tests/cli_models.py:tiny", "cli_models:tiny"])
def test_explain_writes_explanations_report_and_grid(
    tmp_path: Path, pngs: list[Path], spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).parent.parent)  # the file spec is relative to the repository root
    out = tmp_path / "out"
    result = run(
        "explain",
        spec,
        *pngs,
        "--preprocess",
        "unit",
        "-m",
        "builtin.Saliency",
        "-m",
        "builtin.Occlusion",
        "-p",
        "builtin.Occlusion:window=4",
        "--targets",
        "top2",
        "--seed",
        "3",
        "--out",
        out,
        "--report",
        out / "report.html",
        "--png",
        out / "grid.png",
        "--title",
        "tiny run",
    )
    assert result.exit_code == 0, result.output
    assert "builtin.Occlusion: " in result.output and "report -> " in result.output
    sal = xb.Explanation.load(out / "builtin.Saliency.npz")
    occ = xb.Explanation.load(out / "builtin.Occlusion.npz")
    assert sal.attributions.shape == occ.attributions.shape == (2, 2, 16, 16)
    assert occ.params["window"] == [4, 4] and occ.params["stride"] == [2, 2] and sal.params["abs"] is True
    assert np.array_equal(sal.targets, occ.targets) and sal.targets.max() < 4  # the 4-class tiny net
    assert np.array_equal(sal.images[1], np.asarray(Image.open(pngs[1])))
    assert occ.n_model_evals > 0 and np.abs(sal.attributions).sum() > 0
    # the same model through the Python API gives the same maps
    import cli_models

    model = xb.as_model(cli_models.tiny(), preprocess=xb.Preprocess(scale="unit"))
    direct = xb.explain(model, np.stack([sal.images[0], sal.images[1]]), "builtin.Saliency", xb.top_k(2))
    np.testing.assert_allclose(direct.attributions, sal.attributions, rtol=1e-5, atol=1e-7)
    page = (out / "report.html").read_text()
    assert "<title>tiny run</title>" in page and len(img_sources(page)) == 2  # the inputs; maps are drawn by script
    assert page.count("<canvas") == 2 * 2 and page.count("<section class='image'") == 2
    assert "img0.png: predicted" in page and "img1.png: predicted" in page
    assert page.count("<button type='button' data-t=") == 2 * 2  # both targets of top2 reachable per image
    assert (out / "grid.png").read_bytes()[:4] == b"\x89PNG"

    rep = run(
        "report",
        out / "builtin.Saliency.npz",
        out / "builtin.Occlusion.npz",
        "--out",
        tmp_path / "r.html",
        "--png",
        tmp_path / "g.png",
    )
    assert rep.exit_code == 0, rep.output
    assert (tmp_path / "r.html").read_text().count("<canvas") == 2 * 2
    assert Image.open(tmp_path / "g.png").format == "PNG"


def test_report_keeps_two_files_of_the_same_method(tmp_path: Path) -> None:
    exp = make_explanation()
    exp.save(tmp_path / "run1.npz")
    dataclasses.replace(exp, attributions=-exp.attributions, raw=None).save(tmp_path / "run2.npz")
    rep = run("report", tmp_path / "run1.npz", tmp_path / "run2.npz", "--out", tmp_path / "r.html")
    assert rep.exit_code == 0, rep.output
    page = (tmp_path / "r.html").read_text()
    assert page.count("<canvas") == 2 * 2 and "run1" in page and "run2" in page


def test_report_errors_are_clear(tmp_path: Path) -> None:
    junk = tmp_path / "junk.npz"
    np.savez(junk, x=np.zeros(2))
    bad = run("report", junk, "--out", tmp_path / "r.html")
    assert bad.exit_code == 1 and "Error: " in bad.output and isinstance(bad.exception, SystemExit)
    exp = make_explanation()
    exp.save(tmp_path / "a.npz")
    dataclasses.replace(exp, images=255 - exp.images, method="other").save(tmp_path / "b.npz")
    mixed = run("report", tmp_path / "a.npz", tmp_path / "b.npz", "--out", tmp_path / "m.html")
    assert mixed.exit_code == 0, mixed.output  # explanations of other images get their own sections
    assert (tmp_path / "m.html").read_text().count("<section class='image'") == 2 * 2
    assert run("report", tmp_path / "missing.npz").exit_code == 2


def test_explain_errors_are_clear(tmp_path: Path, pngs: list[Path]) -> None:
    img = pngs[0]
    cases = [
        (["no_colon"], "module:factory"),
        (["cli_models:nothere"], "has no attribute 'nothere'"),
        (["no_such_module_xb:f"], "cannot import 'no_such_module_xb'"),
        (["missing_file.py:tiny"], "does not exist"),
        (["cli_models:broken"], "RuntimeError: broken factory"),
        (["cli_models:tiny", "-p", "window=4"], "METHOD:KEY=VALUE"),
        (["cli_models:tiny", "-p", "builtin.Saliency:abs=true"], "is not one of the methods"),
        (
            ["cli_models:tiny", "-p", "builtin.Occlusion:windw=4"],
            "valid parameters are ['baseline', 'stride', 'window']",
        ),
        (["cli_models:tiny", "-m", "builtin.Saliencyy"], "Did you mean 'builtin.Saliency'"),
        (["cli_models:tiny", "--targets", "9"], "targets: class 9 is out of range"),
    ]
    for extra, message in cases:
        spec, rest = extra[0], extra[1:]
        methods = [] if "-m" in rest else ["-m", "builtin.Occlusion"]
        result = run("explain", spec, img, "--preprocess", "unit", *methods, *rest, "--out", tmp_path / "o")
        assert result.exit_code != 0, (extra, result.output)
        assert message in result.output, (extra, result.output)
        assert isinstance(result.exception, SystemExit), (extra, result.exception)  # no traceback
    box = run("explain", "cli_models:box", img, "--preprocess", "none", "-m", "builtin.Saliency", "--out", tmp_path)
    assert box.exit_code != 0 and "needs gradients" in box.output


def test_explain_dataset_writes_a_resumable_store(tmp_path: Path, pngs: list[Path]) -> None:
    store = tmp_path / "store"
    args = [
        "explain",
        "cli_models:box",
        pngs[0].parent,
        "--preprocess",
        "none",
        "-m",
        "builtin.Occlusion",
        "-p",
        "builtin.Occlusion:window=8",
        "--dataset",
        "--out",
        store,
    ]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "2 done, 0 skipped, 0 failed" in result.output
    records = (store / "index.jsonl").read_text().splitlines()
    assert len(records) == 2
    again = run(*args)  # resumes: nothing left to do
    assert again.exit_code == 0 and "0 done, 2 skipped, 0 failed" in again.output
    files = sorted(store.rglob("*.npz"))
    assert len(files) == 2
    exp = xb.Explanation.load(files[0])
    assert exp.attributions.shape == (1, 1, 16, 16) and exp.params["window"] == [8, 8]
    unknown = run("explain", "cli_models:box", pngs[0].parent, "-m", "nope", "--dataset", "--out", tmp_path / "s2")
    assert unknown.exit_code != 0 and "no method named 'nope'" in unknown.output
    assert not (tmp_path / "s2").exists()


def test_cli_models_factories() -> None:
    import cli_models
    import torch

    a, b = cli_models.tiny(), cli_models.tiny()
    x = torch.rand(2, 3, 9, 11)
    assert torch.equal(a(x), b(x)) and a(x).shape == (2, cli_models.N_CLASSES) and not a.training
    scores = cli_models.box()(np.full((1, 4, 4, 3), 255, np.uint8))
    assert scores.shape == (1, 2) and np.allclose(scores, 1.0)
    assert "cli_models" in sys.modules
