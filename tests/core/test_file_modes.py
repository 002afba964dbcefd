"""Saved files get the mode a plain open() gives (0666 less the umask), not mkstemp's 0600 (issue 29, point 10)."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_explanation import make_explanation

from xai_bridge._files import current_umask, write_atomic

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_npz_files_respect_the_umask_as_plain_files_do(tmp_path: Path, umask: int) -> None:
    assert current_umask() == umask
    saved = make_explanation().save(tmp_path / "a.npz")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    assert mode(saved) == mode(plain) == 0o666 & ~umask
    write_atomic(tmp_path / "b.json", b"{}")
    assert mode(tmp_path / "b.json") == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left


def test_npz_and_report_have_the_same_mode(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from xai_bridge.viz.report import write_report

    before = os.umask(0o022)
    try:
        exp = make_explanation()
        saved = exp.save(tmp_path / "a.npz")
        page = write_report(tmp_path / "r.html", {"a": exp})
    finally:
        os.umask(before)
    assert mode(saved) == mode(Path(page)) == 0o644
