"""The xai-bridge command end to end: methods, explain (local and --dataset), report, and its errors.

CLI runs use the tiny seeded nets of tests/cli_models.py and tests/cli_tiny.py on small PNG files.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_pngs
from helpers import REPO
from PIL import Image
from test_explanation import make_explanation
from test_report import img_sources

import xai_bridge as xb
from xai_bridge.cli import main

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


#: The explain options both end-to-end runs share: saliency and 4-pixel occlusion of the top 2 classes, unit scaling.
TWO_METHODS_TOP2 = (
    *("--preprocess", "unit", "-m", "builtin.Saliency", "-m", "builtin.Occlusion"),
    *("-p", "builtin.Occlusion:window=4", "--targets", "top2"),
)


@pytest.mark.parametrize("spec", ["tests/cli_models.py:tiny", "cli_models:tiny"])
def test_explain_writes_explanations_report_and_grid(
    tmp_path: Path, pngs: list[Path], spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the file spec is relative to the repository root
    out = tmp_path / "out"
    result = run(
        "explain",
        spec,
        *pngs,
        *TWO_METHODS_TOP2,
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


def two_methods() -> dict[str, xb.Explanation]:
    exp = make_explanation()
    return {"lib.A": exp, "lib.B": dataclasses.replace(exp, method="lib.B", seconds=1.5, n_model_evals=42)}


@pytest.fixture
def two_pngs(tmp_path: Path) -> list[Path]:
    return make_pngs(tmp_path, size=12)


def test_cli_methods_lists_install_status() -> None:
    result = CliRunner().invoke(main, ["methods"])
    assert result.exit_code == 0
    assert re.search(r"builtin\.Saliency\s+gradient\s+installed: yes", result.output)
    assert "captum.IntegratedGradients" in result.output
    only_cam = CliRunner().invoke(main, ["methods", "--family", "cam"])
    assert "builtin" not in only_cam.output and "gradcam.GradCAM" in only_cam.output


def test_cli_explain_and_report_end_to_end(tmp_path: Path, two_pngs: list[Path]) -> None:
    out = tmp_path / "out"
    spec = str(REPO / "tests" / "cli_tiny.py") + ":tiny"
    result = CliRunner().invoke(
        main,
        [
            "explain",
            spec,
            *map(str, two_pngs),
            *TWO_METHODS_TOP2,
            "--out",
            str(out),
            "--report",
            str(out / "report.html"),
        ],
    )
    assert result.exit_code == 0, result.output
    occ = xb.Explanation.load(out / "builtin.Occlusion.npz")
    assert occ.attributions.shape == (2, 2, 12, 12) and occ.params["window"] == [4, 4]
    sal = xb.Explanation.load(out / "builtin.Saliency.npz")
    assert np.array_equal(sal.targets, occ.targets)
    assert (out / "report.html").is_file()
    rep = CliRunner().invoke(
        main,
        [
            "report",
            str(out / "builtin.Saliency.npz"),
            str(out / "builtin.Occlusion.npz"),
            "--out",
            str(tmp_path / "r.html"),
            "--png",
            str(tmp_path / "g.png"),
        ],
    )
    assert rep.exit_code == 0, rep.output
    assert (tmp_path / "r.html").stat().st_size > 1000 and (tmp_path / "g.png").stat().st_size > 1000


def test_cli_black_box_module_spec_and_dataset(tmp_path: Path, two_pngs: list[Path]) -> None:
    store = tmp_path / "store"
    result = CliRunner().invoke(
        main,
        [
            "explain",
            "cli_tiny:box",
            str(two_pngs[0].parent),
            "--preprocess",
            "none",
            "-m",
            "builtin.Occlusion",
            "-p",
            "builtin.Occlusion:window=6",
            "--dataset",
            "--out",
            str(store),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 done, 0 skipped, 0 failed" in result.output
    assert len((store / "index.jsonl").read_text().splitlines()) == 2


def test_cli_errors_are_clear(tmp_path: Path, two_pngs: list[Path]) -> None:
    bad_spec = CliRunner().invoke(
        main, ["explain", "no_colon", str(two_pngs[0]), "-m", "builtin.Saliency", "--out", str(tmp_path)]
    )
    assert bad_spec.exit_code != 0 and "module:factory" in bad_spec.output
    bad_param = CliRunner().invoke(
        main,
        [
            "explain",
            "cli_tiny:box",
            str(two_pngs[0]),
            "-m",
            "builtin.Occlusion",
            "-p",
            "window=4",
            "--out",
            str(tmp_path),
        ],
    )
    assert bad_param.exit_code != 0 and "METHOD:KEY=VALUE" in bad_param.output
    gradient_on_box = CliRunner().invoke(
        main,
        [
            "explain",
            "cli_tiny:box",
            str(two_pngs[0]),
            "--preprocess",
            "none",
            "-m",
            "builtin.Saliency",
            "--out",
            str(tmp_path),
        ],
    )
    assert gradient_on_box.exit_code != 0 and "needs gradients" in gradient_on_box.output
    junk = tmp_path / "junk.npz"
    np.savez(junk, x=np.zeros(2))
    bad_file = CliRunner().invoke(main, ["report", str(junk), "--out", str(tmp_path / "r.html")])
    assert bad_file.exit_code != 0 and "no xai-bridge metadata" in bad_file.output


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
    # issue 28: files of other images are refused in one line naming both files and the fix (it used to exit 0)
    assert mixed.exit_code == 2 and "b.npz explains other images than a.npz" in mixed.output, mixed.output
    assert "one report per run" in mixed.output and "explain_many" in mixed.output
    assert len([line for line in mixed.output.splitlines() if line.startswith("Error")]) == 1
    assert not (tmp_path / "m.html").exists()
    assert run("report", tmp_path / "missing.npz").exit_code == 2


def test_budget_and_chunk_size_options(tmp_path: Path, pngs: list[Path]) -> None:
    base = [
        "explain",
        "cli_models:box",
        *pngs,
        "--preprocess",
        "none",
        "-m",
        "builtin.RISE",
        "-p",
        "builtin.RISE:grid=4",
    ]
    result = run(*base, "--budget", "24", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    exp = xb.Explanation.load(tmp_path / "out" / "builtin.RISE.npz")
    assert exp.params["n_masks"] == 24
    stored = run(*base, "--budget", "24", "--dataset", "--chunk-size", "1", "--out", tmp_path / "store")
    assert stored.exit_code == 0 and "2 done, 0 skipped, 0 failed" in stored.output, stored.output
    refused = run(*base[:-2], "--budget", "24", "-m", "builtin.Occlusion", "--out", tmp_path / "o")
    assert refused.exit_code != 0 and "no evaluation budget" in refused.output
