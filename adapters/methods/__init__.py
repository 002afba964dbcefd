"""Every built-in method, one module per library, each holding its specs beside its code.

Importing these modules is cheap: each imports its library (and torch) only
when one of its methods runs, so listing methods works with nothing but numpy
installed and names a missing library's pip extra (see
:mod:`xai_bridge.registry`). Adding a method of an existing library is one
entry in that library's module.
"""

from __future__ import annotations

import importlib

from xai_bridge.registry import MethodSpec

__all__ = ["METHOD_MODULES", "builtin_specs"]

#: Modules in this package that define ``SPECS``, in listing order.
METHOD_MODULES = ("builtin", "gradcam", "torchcam", "captum", "shap", "lime")


def builtin_specs() -> list[MethodSpec]:
    """Every built-in :class:`MethodSpec`, in module order."""
    specs: list[MethodSpec] = []
    for name in METHOD_MODULES:
        specs.extend(importlib.import_module(f"{__name__}.{name}").SPECS)
    return specs
