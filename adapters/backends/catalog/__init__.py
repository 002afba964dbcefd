"""The built-in method table, one small module of :class:`BackendSpec` per library.

These modules import nothing heavy: a library is imported only when one of its
methods is first used (see :mod:`xai_bridge.registry`).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

from xai_bridge.registry import BackendSpec

__all__ = ["CATALOG_MODULES", "builtin_specs", "defines_class"]

#: Modules in this package that define ``SPECS``; a missing one is skipped.
CATALOG_MODULES = ("builtin", "gradcam", "torchcam", "captum", "shap", "lime", "rise")


def builtin_specs() -> list[BackendSpec]:
    """Every built-in :class:`BackendSpec`, in catalog order."""
    specs: list[BackendSpec] = []
    for name in CATALOG_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        specs.extend(module.SPECS)
    return specs


def defines_class(package: str, relpath: str, cls: str) -> bool:
    """Whether the installed ``package`` defines ``class cls`` in ``relpath``, read from source without importing it.

    True when the package is not installed, so its names stay registered and
    using one gives the install hint.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return True
    for root in spec.submodule_search_locations:
        path = Path(root) / relpath
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        if re.search(rf"^class {cls}\b", text, re.M):
            return True
    return False
