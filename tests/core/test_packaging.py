"""The adapters/ folder is installed as xai_bridge.adapters, never as a top-level `adapters`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import REPO


def test_adapters_only_under_xai_bridge(tmp_path: Path) -> None:
    code = (
        "import importlib.util, xai_bridge.adapters.models as m; "
        "assert importlib.util.find_spec('adapters') is None, 'top-level adapters is importable'; "
        "print(m.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "xai_bridge.adapters.models"


def test_every_adapter_subpackage_is_declared() -> None:
    """Each folder with __init__.py under adapters/ must be listed in pyproject's packages."""
    import tomllib

    root = REPO
    declared = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "xai_bridge.adapters"
        + ("." + ".".join(p.parent.relative_to(root / "adapters").parts) if p.parent != root / "adapters" else "")
        for p in (root / "adapters").rglob("__init__.py")
    }
    assert found <= declared, f"add to pyproject [tool.setuptools] packages: {sorted(found - declared)}"


#: Imports every submodule of xai_bridge (adapters included) in a fresh interpreter and prints, per module,
#: "ok", "missing <library>" (an optional third-party library is not installed) or what its name resolves to.
_WALK = r"""
import importlib, pkgutil, sys
import xai_bridge, xai_bridge.adapters
names = sorted({m.name for pkg in (xai_bridge, xai_bridge.adapters)
                for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")})
for name in names:
    if name.rsplit(".", 1)[1] == "__main__":
        continue
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        print(name, "missing" if not missing.startswith("xai_bridge") else "broken", missing or exc)
        continue
    parent, _, short = name.rpartition(".")
    found = getattr(sys.modules[parent], short, None)
    print(name, "ok" if found is module else "shadowed", type(found).__name__)
"""


def test_every_submodule_imports_under_its_own_name(tmp_path: Path) -> None:
    """``import xai_bridge.x`` gives the module x, never a function that the package re-exports under its name.

    (``xai_bridge.explain`` used to be both a module and the function the package exported, so
    ``import xai_bridge.explain`` handed back the function; the modules were renamed ``routing``, ``normalization``.)
    """
    out = subprocess.run([sys.executable, "-c", _WALK], cwd=tmp_path, capture_output=True, text=True, check=True)
    rows = [line.split(" ", 2) for line in out.stdout.splitlines()]
    assert len(rows) > 40, out.stdout
    bad = [" ".join(row) for row in rows if row[1] in ("shadowed", "broken")]
    assert not bad, bad
    names = {row[0] for row in rows}
    assert {"xai_bridge.routing", "xai_bridge.normalization", "xai_bridge.datasets.run"} <= names
    assert "xai_bridge.explain" not in names and "xai_bridge.normalize" not in names
