"""The CLI end to end on cli_tiny models (the report itself is tested in test_report.py)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_pngs
from test_explanation import make_explanation

import xai_bridge as xb
from xai_bridge.cli import main


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
    spec = str(Path(__file__).with_name("cli_tiny.py")) + ":tiny"
    result = CliRunner().invoke(
        main,
        [
            "explain",
            spec,
            *map(str, two_pngs),
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
