"""The built-in method table, one small module of :class:`BackendSpec` per library.

These modules import nothing heavy: a library is imported only when one of its
methods is first used (see :mod:`xai_bridge.registry`).
"""

from __future__ import annotations

import importlib

from xai_bridge.registry import BackendSpec

__all__ = ["builtin_specs", "CATALOG_MODULES"]

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
