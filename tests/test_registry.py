"""The backend registry: lazy loading, install hints, refusing clobbers, entry points."""

from __future__ import annotations

import sys
from importlib import metadata

import pytest

import xai_bridge as xb
from xai_bridge.registry import BackendSpec, MethodSpec, Registry


def test_builtin_methods_are_listed() -> None:
    names = xb.available_methods()
    assert {"builtin.Saliency", "builtin.Occlusion"} <= set(names)
    assert names == sorted(names)
    assert "builtin.Occlusion" in xb.available_methods(family="perturbation")
    assert "builtin.Saliency" not in xb.available_methods(family="perturbation")


def test_import_is_light() -> None:
    code = (
        "import sys, xai_bridge; xai_bridge.available_methods(); "
        "heavy = [m for m in ('torch', 'shap', 'captum', 'lime', 'pytorch_grad_cam', 'torchcam', 'transformers', "
        "'matplotlib', 'pandas') if m in sys.modules]; print(heavy); assert not heavy, heavy"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_method_suggests_names() -> None:
    with pytest.raises(xb.UnknownMethodError, match="builtin.Saliency"):
        xb.default_registry().spec("builtin.salency")
    with pytest.raises(xb.UnknownMethodError, match="available_methods"):
        xb.default_registry().spec("nothing-like-it")
    assert xb.default_registry().spec("BUILTIN.SALIENCY").name == "builtin.Saliency"


def test_missing_library_gives_install_hint() -> None:
    reg = Registry(entry_points=False)
    reg.register(BackendSpec("fake.Method", "fake_module:run", requires=("surely_not_installed_lib",), extra="fake"))
    with pytest.raises(xb.BackendNotInstalledError, match=r"pip install 'xai-bridge\[fake\]'"):
        reg.load("fake.Method")
    assert not reg.specs["fake.Method"].is_installed()
    assert reg.available(installed_only=True) == []


def test_register_refuses_taken_names_unless_clobber() -> None:
    reg = Registry(entry_points=False)
    spec = BackendSpec("x.M", "math:sqrt")
    reg.register(spec)
    with pytest.raises(ValueError, match="already registered.*clobber=True"):
        reg.register(spec)
    reg.register(BackendSpec("x.M", "math:floor"), clobber=True)
    assert reg.load("x.M")[1](2.5) == 2
    with pytest.raises(TypeError):
        reg.specs["y"] = spec  # read-only view
    with pytest.raises(ValueError, match="module:attribute"):
        reg.register(BackendSpec("x.N", "no_colon"))


def test_entry_points_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BackendSpec("thirdparty.Method", "math:sqrt", description="from a plugin")

    class EP:
        name = "thirdparty"

        def load(self):
            return lambda: [spec]

    def fake_entry_points(group: str):
        assert group in ("xai_bridge.methods", "xai_bridge.backends")
        return [EP()] if group == "xai_bridge.methods" else []

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    reg = Registry([BackendSpec("a.B", "math:floor")])
    assert reg.available() == ["a.B", "thirdparty.Method"]


def test_old_names_are_aliases_of_one_naming_scheme(tiny_model, rgb_images) -> None:
    registry = xb.default_registry()
    for old, new in [
        ("builtin.saliency", "builtin.Saliency"),
        ("builtin.occlusion", "builtin.Occlusion"),
        ("rise", "builtin.RISE"),
        ("lime", "lime.Lime"),
        ("shap.partition", "shap.Partition"),
        ("shap.gradient", "shap.Gradient"),
    ]:
        assert registry.spec(old).name == new
        assert old not in xb.available_methods()  # listed once, by the canonical name
    assert registry.spec("GRADCAM.gradcam").name == "gradcam.GradCAM"  # case folded when unique
    many = xb.explain_many(tiny_model, rgb_images, ["builtin.saliency", ("rise", {"n_masks": 8})], targets=[1, 2])
    assert list(many) == ["builtin.saliency", "rise"]  # keyed as given
    assert [e.method for e in many.values()] == ["builtin.Saliency", "builtin.RISE"]
    with pytest.raises(xb.ParameterError, match="each method may appear once"):
        xb.explain_many(tiny_model, rgb_images, ["lime", "lime.Lime"])


def test_registering_a_taken_alias_is_refused() -> None:
    registry = xb.Registry(entry_points=False)
    registry.register(xb.MethodSpec("a.One", "m:f", aliases=("one",)))
    with pytest.raises(ValueError, match="'one' is already registered"):
        registry.register(xb.MethodSpec("b.One", "m:f", aliases=("one",)))
    assert registry.spec("one").name == "a.One"


def test_entry_points_of_the_old_group_are_still_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = MethodSpec("legacy.Method", "math:sqrt")

    class EP:
        name = "legacy"

        def load(self):
            return lambda: [spec]

    monkeypatch.setattr(metadata, "entry_points", lambda group: [EP()] if group == "xai_bridge.backends" else [])
    assert Registry([]).available() == ["legacy.Method"]
