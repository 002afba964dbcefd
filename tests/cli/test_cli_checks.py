"""The CLI checks before it works: every -p and target before the model loads or runs, --help, misuse, pipes.

Models are written to tmp_path as small modules whose factory (or model) records that it was
reached, so a test can tell a refusal made up front from one made after the work started.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_pngs
from PIL import Image
from test_explanation import make_explanation

import xai_bridge as xb
from xai_bridge.cli import main

#: A model module: ``load`` leaves a marker file in the current folder when called, ``named`` is a black box
#: with class names that leaves another marker when it is evaluated (the module is imported once per process,
#: so the markers go to the test's current folder, not the module's).
MODELS = """
from pathlib import Path
import numpy as np
import xai_bridge as xb

def load():
    (Path.cwd() / "loaded").touch()
    return lambda x: np.stack([x[..., 0].mean((1, 2)), x[..., 2].mean((1, 2))], 1).astype(np.float32)

def named():
    def predict(x):
        (Path.cwd() / "ran").touch()
        return np.zeros((len(x), 2), np.float32)
    return xb.as_model(predict, class_names=["cat", "dog"])
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "xbcheck_models.py").write_text(MODELS)
    make_pngs(tmp_path / "imgs", size=16)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: object) -> click.testing.Result:
    return CliRunner().invoke(main, [str(a) for a in args])


BOX = ("xbcheck_models:load", "imgs", "--preprocess", "none")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        (["-p", "builtin.RISE:n_masks=-5"], "n_masks: expected an integer >= 1, got -5"),
        (["-p", "builtin.RISE:n_maks=5"], "valid parameters are"),
        (["-p", "builtin.Occlusion:window=0"], "window"),
    ],
)
def test_every_param_is_checked_before_the_model_loads(workdir: Path, params: list[str], fragment: str) -> None:
    """The last method's bad -p is reported before the first method runs, before the model even loads."""
    done = run("explain", *BOX, "-m", "builtin.Occlusion", "-m", "builtin.RISE", *params, "--out", "out")
    assert done.exit_code == 2, done.output
    assert fragment in done.output and "--param" in done.output
    assert not (workdir / "loaded").exists() and not (workdir / "out").exists()
    assert "loading model" not in done.output


def test_a_budget_is_checked_with_the_methods_own_parameter(workdir: Path) -> None:
    done = run("explain", *BOX, "-m", "builtin.RISE", "-p", "builtin.RISE:n_masks=8", "--budget", "8", "--out", "o")
    assert done.exit_code == 2 and "pass only one of them" in done.output, done.output
    assert not (workdir / "loaded").exists()


def test_valid_params_pass_and_the_run_matches_the_api(workdir: Path) -> None:
    done = run("explain", *BOX, "-m", "builtin.RISE", "-p", "builtin.RISE:n_masks=8", "--seed", "2", "--out", "out")
    assert done.exit_code == 0, done.output
    saved = xb.Explanation.load(workdir / "out" / "builtin.RISE.npz")
    import xbcheck_models

    direct = xb.explain(xbcheck_models.load(), saved.images, "builtin.RISE", n_masks=8, seed=2)
    np.testing.assert_allclose(saved.attributions, direct.attributions, rtol=1e-6)


def test_quick_params_of_every_installed_method_pass_the_checks() -> None:
    """The stand-in model never causes a refusal of parameters the run would accept."""
    from xai_bridge._cli_checks import check_plan

    registry = xb.default_registry()
    names = registry.available(installed_only=True)
    assert len(names) > 20
    for name in names:
        check_plan([(name, dict(registry.spec(name).quick))], None, (32, 32), 0)
        with pytest.raises(click.BadParameter, match=f"{name}: .*unknown parameter"):
            check_plan([(name, {"not_a_parameter": 1})], None, (32, 32), 0)


def test_a_bad_target_is_refused_before_the_model_runs(workdir: Path) -> None:
    done = run("explain", "xbcheck_models:named", "imgs", "-m", "builtin.Occlusion", "--targets", "dgo", "--out", "o")
    assert done.exit_code == 1 and "dgo" in done.output and "'dog'" in done.output, done.output
    assert not (workdir / "ran").exists() and not (workdir / "o").exists()
    index = run("explain", "xbcheck_models:named", "imgs", "-m", "builtin.Occlusion", "--targets", "5", "--out", "o")
    # a black box's output count is known only from its first prediction pass: refused there, before any method
    assert index.exit_code == 1 and "class 5 is out of range" in index.output and not (workdir / "o").exists()
    ok = run("explain", "xbcheck_models:named", "imgs", "-m", "builtin.Occlusion", "--targets", "dog", "--out", "o")
    assert ok.exit_code == 0 and (workdir / "ran").exists(), ok.output


def test_help_says_what_model_images_and_params_accept() -> None:
    text = run("explain", "--help").output
    for fragment in (
        "efficientnet_lite0",
        "path/to/model.onnx",
        "package.module:factory",
        "path/to/file.py:factory",
        "Hugging Face folder",
        "IMAGES are image files",
        "-p METHOD:KEY=VALUE",
        "Examples:",
        "-p lime.Lime:num_samples=300",
    ):
        assert fragment in text, fragment
    assert "xai-bridge report results/*.npz" in run("report", "--help").output


def test_size_with_one_number_names_the_form(workdir: Path) -> None:
    done = run("explain", *BOX, "-m", "builtin.Occlusion", "--size", "224", "--out", "x")
    assert done.exit_code == 2
    assert "expected two integers, HEIGHT WIDTH (e.g. --size 224 224), got '--out' next" in done.output
    zero = run("explain", *BOX, "-m", "builtin.Occlusion", "--size", "0", "8", "--out", "x")
    assert zero.exit_code == 2 and "pixel counts >= 1" in zero.output


def test_a_missing_onnx_file_is_one_line(workdir: Path) -> None:
    done = run("explain", "nothere.onnx", "imgs", "-m", "builtin.Occlusion", "--out", "x")
    assert done.exit_code == 2 and "file 'nothere.onnx' does not exist" in done.output


def test_methods_into_a_closed_pipe_exits_quietly() -> None:
    """``xai-bridge methods | head -1``: the reader is gone before the first line; exit 0, nothing on stderr."""
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "xai_bridge", "methods"], stdout=write, stderr=subprocess.PIPE, text=True
    )
    os.close(write)
    os.close(read)  # long before the child has imported anything and printed
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == "", err


def test_png_into_a_missing_folder_creates_it(workdir: Path) -> None:
    done = run("explain", *BOX, "-m", "builtin.Occlusion", "--targets", "top2", "--out", "o", "--png", "new/dir/g.png")
    assert done.exit_code == 0, done.output
    grid = Image.open(workdir / "new" / "dir" / "g.png")
    # top2 asked: one column per target (image + 2), at the grid's dpi (panels of 2.2 inches)
    assert grid.width > 3 * 2.2 * 100 and grid.info.get("dpi", (0,))[0] == pytest.approx(120, abs=1)


def test_report_png_of_other_images_is_refused_before_writing(tmp_path: Path) -> None:
    exp = make_explanation()
    exp.save(tmp_path / "a.npz")
    dataclasses.replace(exp, images=255 - exp.images, method="other").save(tmp_path / "b.npz")
    out, png = tmp_path / "r.html", tmp_path / "g.png"
    done = run("report", tmp_path / "a.npz", tmp_path / "b.npz", "--out", out, "--png", png)
    assert done.exit_code == 2 and "b.npz explains other images than a.npz" in done.output, done.output
    assert len([line for line in done.output.splitlines() if line.startswith("Error")]) == 1
    assert not out.exists() and not png.exists()


def test_report_writes_into_missing_folders_and_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    exp = make_explanation()
    exp.save(tmp_path / "a.npz")
    dataclasses.replace(exp, method="other").save(tmp_path / "b.npz")  # the same images, another method
    out, png = tmp_path / "new" / "r.html", tmp_path / "new" / "dir" / "g.png"
    done = run("report", tmp_path / "a.npz", tmp_path / "b.npz", "--out", out, "--png", png)
    assert done.exit_code == 0, done.output
    assert Image.open(png).format == "PNG" and out.read_text().count("<canvas") == 2 * 2  # 2 images x 2 methods
    (tmp_path / "file").write_text("")
    blocked = run("report", tmp_path / "a.npz", "--out", tmp_path / "r2.html", "--png", tmp_path / "file" / "g.png")
    assert blocked.exit_code == 2 and "is a file, not a folder" in blocked.output, blocked.output
    assert len([line for line in blocked.output.splitlines() if line.startswith("Error")]) == 1
    assert not (tmp_path / "r2.html").exists()
