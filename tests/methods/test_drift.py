"""Drift: every public method class of each library is registered or excluded with a reason.

A library release that adds a class fails :func:`test_every_public_class_is_accounted_for`
until someone routes it or lists it in its module's ``CLASSES`` with a one-line reason.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest
from xai_bridge.adapters.methods._drift import LibraryClasses

import xai_bridge as xb

#: (method module declaring CLASSES, library import name)
MODULES = (
    ("xai_bridge.adapters.methods.captum", "captum"),
    ("xai_bridge.adapters.methods.gradcam", "pytorch_grad_cam"),
    ("xai_bridge.adapters.methods.torchcam", "torchcam"),
    ("xai_bridge.adapters.methods.shap", "shap"),
    ("xai_bridge.adapters.methods.lime", "lime"),
)


def _classes(module: str, library: str) -> LibraryClasses:
    pytest.importorskip(library)
    return importlib.import_module(module).CLASSES


@pytest.mark.parametrize(("module", "library"), MODULES)
def test_every_public_class_is_accounted_for(module: str, library: str) -> None:
    classes = _classes(module, library)
    registered = xb.default_registry().specs
    assert len(classes.public_classes()) >= 3, "the scan found (almost) nothing: wrong module?"
    assert classes.unaccounted(registered) == [], f"route or exclude (with a reason) in {module}.CLASSES"
    assert classes.stale(registered) == [], f"{module}.CLASSES names classes the library no longer has"
    assert all(reason.strip() and "\n" not in reason for reason in classes.excluded.values())


def test_a_class_the_library_gains_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stub library with one routed, one excluded and, after a 'release', one new class."""
    stub = types.ModuleType("stubcam")
    stub.__all__ = ["GradThing", "Helper"]
    for name in ("GradThing", "Helper"):
        setattr(stub, name, type(name, (), {"__module__": "stubcam"}))
    monkeypatch.setitem(sys.modules, "stubcam", stub)
    classes = LibraryClasses("stubcam", "stub", excluded={"Helper": "a helper, not a method"})
    registered = {"stub.GradThing"}
    assert classes.unaccounted(registered) == []
    stub.NewCAM = type("NewCAM", (), {"__module__": "stubcam"})
    stub.__all__ = [*stub.__all__, "NewCAM"]
    assert classes.unaccounted(registered) == ["NewCAM"]
    del stub.__all__  # a module without __all__: its public classes defined in the library are read
    stub.partial = type("partial", (), {"__module__": "functools"})  # imported from elsewhere: not the library's
    assert classes.unaccounted(registered) == ["NewCAM"]
    assert LibraryClasses("stubcam", "stub", excluded={"Gone": "x"}).stale(registered) == ["Gone"]
