"""The adapters/ folder is installed as xai_bridge.adapters, never as a top-level `adapters`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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

    root = Path(__file__).resolve().parents[1]
    declared = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "xai_bridge.adapters"
        + ("." + ".".join(p.parent.relative_to(root / "adapters").parts) if p.parent != root / "adapters" else "")
        for p in (root / "adapters").rglob("__init__.py")
    }
    assert found <= declared, f"add to pyproject [tool.setuptools] packages: {sorted(found - declared)}"
