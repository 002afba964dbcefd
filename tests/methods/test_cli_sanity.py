"""``xai-bridge explain --report r.html --sanity``: the report carries the cascading randomisation check."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_pngs
from helpers import REPO

from xai_bridge.cli import main

pytest.importorskip("matplotlib")


@pytest.mark.parametrize("sanity", [True, False])
def test_explain_report_with_and_without_sanity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sanity: bool) -> None:
    monkeypatch.chdir(REPO)  # the model spec is relative to the repository root
    pngs = make_pngs(tmp_path / "images", n=1, size=16)
    out = tmp_path / "out"
    args = ["explain", "cli_models:tiny", *map(str, pngs), "--preprocess", "unit", "-m", "builtin.Saliency"]
    args += ["--targets", "top1", "--out", str(out), "--report", str(out / "r.html")]
    result = CliRunner().invoke(main, args + (["--sanity"] if sanity else []))
    assert result.exit_code == 0, result.output
    page = (out / "r.html").read_text(encoding="utf-8")
    assert ("<h2>Sanity check</h2>" in page) == sanity
    if sanity:
        assert "<th class='l'>builtin.Saliency</th><td>" in page
