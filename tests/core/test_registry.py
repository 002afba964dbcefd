"""The backend registry: lazy loading, install hints, refusing clobbers, entry points."""

from __future__ import annotations

import sys
from importlib import metadata

import numpy as np
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


def _smooth_images() -> np.ndarray:
    """Two 32 x 32 gradients: enough superpixels for every superpixel method's default segmentation."""
    yy, xx = np.mgrid[0:32, 0:32]
    image = np.stack([yy * 8, xx * 8, (yy + xx) * 4], axis=-1).astype(np.uint8)
    return np.stack([image, image[::-1]])


_PERTURBATION = [
    "builtin.Saliency",  # and gradient methods whose count is exact
    "captum.IntegratedGradients",
    "builtin.Occlusion",
    pytest.param("builtin.RISE", marks=pytest.mark.slow),
    pytest.param("shap.Partition", marks=pytest.mark.slow),
    "lime.Lime",
    "captum.Occlusion",
    "captum.FeatureAblation",
    pytest.param("captum.ShapleyValueSampling", marks=pytest.mark.slow),
    "captum.KernelShap",
    "captum.Lime",
]


@pytest.mark.parametrize("name", _PERTURBATION)
def test_expected_evaluations_are_the_counted_ones(tiny_model: xb.TorchModel, name: str) -> None:
    """Each perturbation method's own estimate (the progress bar's ETA) is what a run at its defaults spends."""
    from xai_bridge import progress

    spec = xb.default_registry().spec(name)
    if not spec.is_installed():
        pytest.skip(f"{name} is not installed")
    images = _smooth_images()
    exp = xb.explain(tiny_model, images, name, targets=[[1, 3], [0, 2]], progress=False)
    params: dict = {}
    if "segments" in exp.extras and name.startswith("captum."):  # the superpixels the run found, not the nominal 50
        params["segmentation"] = exp.extras["segments"][:, 0]
    assert spec.expected_evals(params, 2, 2, (32, 32)) == exp.n_model_evals
    assert progress.expected_evals(name, params, 2, 2, (32, 32)) == exp.n_model_evals


def test_budget_default_is_the_methods_own() -> None:
    """``budget_default`` is read from the method's defaults: a run with no budget records it."""
    specs = xb.default_registry().specs
    assert specs["builtin.RISE"].budget_default == 4000  # the paper's; progress once assumed 2000
    for spec in specs.values():
        assert (spec.budget is None) == (spec.budget_default is None), spec.name
        assert spec.budget is None or spec.budget not in spec.quick or spec.quick[spec.budget] < spec.budget_default
