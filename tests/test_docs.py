"""The docs site: every ```python block in docs/*.md runs, the method table covers the registry, the build is strict.

Blocks of one page run in order in one namespace, like a notebook, in a
temporary folder holding scikit-image's sample photos under the names the
pages use (``cat.jpg`` is chelsea). A hidden ``<!-- setup ... -->`` comment
holds code a block needs but a reader does not (a tiny model folder, the
loopback caption server); it may use ``_stack``, an ``ExitStack`` closed after
the page. ``<!-- no-run: reason -->`` right before a block skips it, for what
no test machine has (a cloud key, a hub download); at most a quarter of all
blocks may be skipped so.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
#: Most blocks that may be marked no-run, as a share of all blocks in the docs and the README.
NO_RUN_BUDGET = 0.25
#: Sample photos written into each page's folder, by the name the pages use.
PHOTOS = {"cat.jpg": "chelsea", "coffee.jpg": "coffee", "rocket.jpg": "rocket", "astronaut.jpg": "astronaut"}
#: Words that make a page's blocks slow: the real model, transformers, Keras.
SLOW_WORDS = ("efficientnet_lite0(", "transformers", "keras", "timm")

_TOKEN = re.compile(
    r"<!--\s*setup\s*\n(?P<setup>.*?)-->"
    r"|<!--\s*no-run:(?P<reason>.*?)-->\s*\n(?=```python)"
    r"|^```python[^\n]*\n(?P<code>.*?)^```",
    re.S | re.M,
)


@dataclass(frozen=True)
class Block:
    """One piece of code from a page: a visible block or a hidden setup."""

    code: str
    line: int
    hidden: bool = False
    no_run: str | None = None


def blocks(path: Path) -> list[Block]:
    """The page's code in order: hidden setups and ```python blocks (with their no-run reason, if any)."""
    text = path.read_text(encoding="utf-8")
    found: list[Block] = []
    reason: str | None = None
    for match in _TOKEN.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if match["setup"] is not None:
            found.append(Block(match["setup"], line, hidden=True))
        elif match["reason"] is not None:
            reason = match["reason"].strip() or "no reason given"
        else:
            found.append(Block(match["code"], line, no_run=reason))
            reason = None
    return found


def write_photos(folder: Path) -> None:
    """scikit-image's samples as JPEG files under the names the pages use, and a photos/ folder of two."""
    from PIL import Image
    from skimage import data

    for name, sample in PHOTOS.items():
        Image.fromarray(getattr(data, sample)()).convert("RGB").save(folder / name, quality=95)
    (folder / "photos").mkdir()
    for name in ("cat.jpg", "coffee.jpg"):
        Image.open(folder / name).resize((224, 224)).save(folder / "photos" / name, quality=95)


def run_page(path: Path, folder: Path) -> int:
    """Run every runnable block of ``path`` in ``folder``; returns how many ran."""
    path = path.resolve()
    write_photos(folder)
    environ = dict(os.environ)
    namespace: dict[str, Any] = {"__name__": f"docs_{path.stem}"}
    ran = 0
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        with contextlib.ExitStack() as stack:
            namespace["_stack"] = stack
            for block in blocks(path):
                if block.no_run:
                    continue
                code = compile(block.code, f"{path.name}:{block.line}", "exec")
                exec(code, namespace)
                ran += not block.hidden
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        import matplotlib.pyplot as plt

        plt.close("all")
    return ran


def _param(path: Path) -> Any:
    slow = any(word in path.read_text(encoding="utf-8") for word in SLOW_WORDS)
    return pytest.param(path, id=path.stem, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("page", [_param(p) for p in PAGES])
def test_every_code_block_of_the_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("XAI_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    visible = [b for b in blocks(page) if not b.hidden]
    ran = run_page(page, tmp_path)
    assert ran == sum(not b.no_run for b in visible)


def test_few_blocks_are_marked_not_to_run() -> None:
    visible = [b for page in [*PAGES, ROOT / "README.md"] for b in blocks(page) if not b.hidden]
    skipped = [b for b in visible if b.no_run]
    assert len(visible) >= 20, "the docs should show code"
    assert len(skipped) <= NO_RUN_BUDGET * len(visible), f"{len(skipped)} of {len(visible)} blocks are no-run"


def test_the_parser_sees_setups_no_runs_and_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n<!-- setup\nx = 1\n-->\n\n```python\ny = x + 1\n```\n\n"
        "<!-- no-run: a cloud key -->\n```python\nraise SystemExit\n```\n```bash\nls\n```\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.hidden, b.no_run) for b in found] == [(True, None), (False, None), (False, "a cloud key")]
    assert found[1].code == "y = x + 1\n"
    folder = tmp_path / "run"
    folder.mkdir()
    assert run_page(page, folder) == 1


def test_the_method_table_lists_every_registered_method() -> None:
    import xai_bridge as xb

    sys.path.insert(0, str(DOCS / "_hooks"))
    try:
        from methods_table import MARKER, methods_table
    finally:
        sys.path.remove(str(DOCS / "_hooks"))
    table = methods_table()
    specs = xb.default_registry().specs
    for name, spec in specs.items():
        assert f"| `{name}` |" in table
        if spec.budget:
            assert f"`{spec.budget}`" in table
    assert table.count("\n| `") == len(specs)
    assert MARKER in (DOCS / "methods.md").read_text(encoding="utf-8")


def test_every_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "_hooks" not in p.parts]
    assert pages
    missing = [p for p in pages if f": {p}" not in nav]
    assert not missing, f"pages missing from mkdocs.yml's nav: {missing}"


@pytest.mark.skipif(
    shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None, reason="mkdocs not installed"
)
def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    mkdocs = str(Path(sys.executable).parent / "mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    methods = (tmp_path / "site" / "methods.html").read_text(encoding="utf-8")
    assert "captum.IntegratedGradients" in methods and "<!-- methods-table -->" not in methods


def layout_paths(page: Path) -> list[str]:
    """Every file and folder the contributing page's layout tree names, as paths from the repository root."""
    text = page.read_text(encoding="utf-8")
    tree = text.split("```\n", 2)[1]
    stack: list[tuple[int, str]] = []
    paths = []
    for line in tree.splitlines():
        if not line.strip() or line.startswith(" " * 20):  # a description's continuation line
            continue
        indent = len(line) - len(line.lstrip())
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        prefix = stack[-1][1] if stack else ""
        for name in (n.strip() for n in names.split(",")):
            paths.append(prefix + name)
            if name.endswith("/"):
                stack.append((indent, prefix + name))
    return paths


def test_the_layout_on_the_contributing_page_names_files_that_exist() -> None:
    paths = layout_paths(DOCS / "contributing.md")
    assert len(paths) > 50
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"docs/contributing.md's layout names files that are gone (update the tree): {missing}"


def test_the_layout_on_the_contributing_page_names_every_module() -> None:
    named = set(layout_paths(DOCS / "contributing.md"))
    modules = [
        f.relative_to(ROOT).as_posix()
        for folder in ("xai_bridge", "adapters")
        for f in sorted((ROOT / folder).rglob("*.py"))
        if f.name != "__init__.py" and "__pycache__" not in f.parts
    ]
    unnamed = [m for m in modules if m not in named]
    assert not unnamed, f"add these modules to docs/contributing.md's layout, one line each: {unnamed}"


#: Keyword forms the explain family deprecated: the docs show only the new ones (budget=, targets=, batch_size=).
OLD_KEYWORDS = ("max_evals=", "num_samples=", "n_masks=", "captions=", "answers=", "model_batch_size=")


def test_the_code_blocks_use_the_explain_familys_current_keywords() -> None:
    stale = [
        f"{page.name}:{block.line}: {word}"
        for page in [*PAGES, ROOT / "README.md"]
        for block in blocks(page)
        for word in OLD_KEYWORDS
        if word in block.code and not block.no_run
    ]
    assert not stale, f"use budget= / targets= / batch_size= instead: {stale}"


def test_sphinx_roles_in_docstrings_render_as_code() -> None:
    sys.path.insert(0, str(DOCS / "_hooks"))
    try:
        from sphinx_roles import plain
    finally:
        sys.path.remove(str(DOCS / "_hooks"))
    text = "see :func:`~xai_bridge.load_images` and :class:`xai_bridge.Explanation`, :meth:`Model.predict`"
    assert plain(text) == "see `load_images` and `xai_bridge.Explanation`, `Model.predict`"
