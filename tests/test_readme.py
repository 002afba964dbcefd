"""The README: short, its links resolve, and every ```python block in it runs.

The blocks run as the docs pages' do (see ``test_docs``): in order, in one
namespace, in a folder holding the sample photos the README names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_docs import blocks, run_page

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The README is a pitch and a map, not a manual: the manual is the docs site.
MAX_LINES = 200


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES


def test_the_readme_links_resolve_and_reach_every_docs_page() -> None:
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local
    assert [t for t in local if not (ROOT / t).exists()] == []
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")} - {"docs/index.md"}
    assert pages - set(local) == set(), "every docs page should be linked from the README"


def test_the_readme_uses_the_current_names() -> None:
    text = README.read_text(encoding="utf-8")
    for stale in ("BackendNotInstalledError", "max_evals=", "model_batch_size", "xai_bridge.backends", "normalize.py"):
        assert stale not in text


@pytest.mark.slow
def test_every_code_block_of_the_readme_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")
    found = [b for b in blocks(README) if not b.hidden]
    assert found and not any(b.no_run for b in found)
    assert run_page(README, tmp_path) == len(found)
