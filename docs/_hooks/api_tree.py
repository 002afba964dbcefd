"""mkdocs hook: lay out the package as installed, so griffe can read ``xai_bridge.adapters`` statically.

The repository keeps ``adapters/`` beside ``xai_bridge/`` and setuptools installs it
as ``xai_bridge.adapters`` (``package-dir`` in pyproject.toml). griffe reads source
files without importing them, so it needs that shape on disk: a copy of the
core with ``adapters/`` inside it (copies, not links: griffe resolves a linked
``__init__.py`` back to the repository and would miss ``adapters``). Python
files only; a few hundred kilobytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

TREE = "build/api-tree"


@event_priority(100)  # before mkdocstrings' own on_config: it checks its paths then (a fresh clone has none yet)
def on_config(config: Any) -> Any:
    """Rebuild the package tree before mkdocstrings reads the package."""
    root = Path(config.config_file_path).parent
    tree = root / TREE / "xai_bridge"
    shutil.rmtree(tree.parent, ignore_errors=True)
    keep = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root / "xai_bridge", tree, ignore=keep)
    shutil.copytree(root / "adapters", tree / "adapters", ignore=keep)
    return config
