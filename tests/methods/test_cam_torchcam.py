"""torchcam backends: parity with the extractors called directly; every CAM method in sequence on one model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_images
from xai_bridge.adapters.models import hook_count

import xai_bridge as xb

methods = pytest.importorskip("torchcam.methods")

TARGETS = [1, 3]
#: Every torchcam 0.5.0 extractor explaining a class score on one layer, with small settings for speed.
SETTINGS = {
    "CAM": {},
    "ScoreCAM": {"batch_size": 5},
    "SSCAM": {"num_samples": 3},
    "ISCAM": {"num_samples": 3},
    "GradCAM": {},
    "GradCAMpp": {},
    "SmoothGradCAMpp": {"num_samples": 3, "std": 20.0},
    "XGradCAM": {},
    "LayerCAM": {},
    "FinerCAM": {"num_references": 2},
}
LIBRARY_CTOR = {
    "ScoreCAM": {"batch_size": 5},
    "SSCAM": {"num_samples": 3},
    "ISCAM": {"num_samples": 3},
    "SmoothGradCAMpp": {"num_samples": 3, "std": 20.0},
    "FinerCAM": {"num_references": 2},
}


def minmax(a: np.ndarray) -> np.ndarray:
    lo = a.min(axis=(-2, -1), keepdims=True)
    return (a - lo) / ((a - lo).max(axis=(-2, -1), keepdims=True) + 1e-12)


def upsample(cam: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    return F.interpolate(cam[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def library_maps(model, images, name: str, targets, seed: int = 0):
    """The extractor called directly on the same pixel module and layer: (raw, normalised) upsampled."""
    net, x = model.pixel_module(), model.pixel_tensor(images)
    out = {}
    with model.guard():
        for normalized in (False, True):
            kwargs = dict(LIBRARY_CTOR.get(name, {}))
            if name == "CAM":
                kwargs["fc_layer"] = model.module.fc
            with getattr(methods, name)(net, model.module.features, **kwargs) as extractor:
                torch.manual_seed(seed)
                scores = net(x)
                (cam,) = extractor(list(targets), scores, normalized=normalized)
            out[normalized] = upsample(cam.detach(), tuple(images.shape[1:3]))
    return out[False], out[True]


def test_every_method_is_registered() -> None:
    assert {f"torchcam.{m}" for m in SETTINGS} <= set(xb.available_methods(family="cam"))
    # routed since issue 27, declared normalised (a product of min-max scaled per-layer maps)
    assert xb.default_registry().spec("torchcam.RefineCAM").normalised


@pytest.mark.parametrize("name", list(SETTINGS))
def test_parity_with_the_library(tiny_model, rgb_images, name) -> None:
    exp = xb.explain(tiny_model, rgb_images, f"torchcam.{name}", targets=TARGETS, **SETTINGS[name])
    raw, normalised = library_maps(tiny_model, rgb_images, name, TARGETS)
    ours = exp.attributions[:, 0]
    assert ours.shape == (2, 40, 48) and exp.params["layer"] == "features"
    assert np.allclose(ours, raw, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(raw).max())))
    assert np.allclose(minmax(ours), minmax(normalised), atol=1e-5), "min-max of ours is torchcam's map"
    assert np.abs(ours).max() > 0
    assert exp.seed == (0 if name in ("SSCAM", "SmoothGradCAMpp") else None)


class CoarseNet(torch.nn.Module):
    """A 4x4 CAM layer under 32x32 inputs: upsampling to the image moves the min and max off the layer's."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(8))
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(6, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.mark.parametrize("name", ["GradCAM", "CAM", "SmoothGradCAMpp"])
def test_library_view_is_torchcams_own_normalised_map(rgb_images, name) -> None:
    """torchcam min-max scales at layer resolution; library_view() gives exactly that, normalize() differs."""
    from conftest import TINY_PREPROCESS

    model = xb.TorchModel(CoarseNet().eval(), TINY_PREPROCESS)
    exp = xb.explain(model, rgb_images, f"torchcam.{name}", targets=TARGETS, **SETTINGS[name])
    _, normalised = library_maps(model, rgb_images, name, TARGETS)
    assert exp.extras["layer_range"].shape == (2, 1, 2)
    np.testing.assert_allclose(exp.library_view()[:, 0], normalised, atol=1e-6)
    gap = np.abs(xb.normalize(exp.attributions, "minmax")[:, 0] - normalised).max()
    assert gap > 1e-3  # what the README states: image-resolution min-max is close to torchcam's, not equal
    np.testing.assert_allclose(exp[1].library_view(), exp.library_view()[1:], atol=0)  # sliced with the maps


def test_gradcam_agrees_across_libraries(tiny_model, rgb_images) -> None:
    """torchcam #50 reported different Grad-CAMs; on the same layer and target the raw maps now agree."""
    tc = xb.explain(tiny_model, rgb_images, "torchcam.GradCAM", targets=TARGETS).attributions
    gcam = xb.explain(tiny_model, rgb_images, "gradcam.GradCAM", targets=TARGETS).attributions
    assert np.allclose(tc, gcam, rtol=1e-4, atol=1e-7)


def test_several_target_columns_and_cam_fc_layer(tiny_model, rgb_images) -> None:
    exp = xb.explain(tiny_model, rgb_images, "torchcam.CAM", targets=[[1, 2], [3, 0]])
    raw, _ = library_maps(tiny_model, rgb_images, "CAM", [2, 0])
    assert np.allclose(exp.attributions[:, 1], raw, atol=1e-5)
    assert exp.params["fc_layer"] == "fc"
    assert exp.attributions.min() < 0  # CAM has no ReLU; the raw map keeps negative evidence


def test_smoothgradcampp_default_noise_is_in_pixels(tiny_model) -> None:
    images = random_images((1, 32, 32, 3), seed=1)
    exp = xb.explain(tiny_model, images, "torchcam.SmoothGradCAMpp", num_samples=2)
    assert exp.params["std"] == pytest.approx(0.3 * 0.25 * 255)  # 0.3 in (x / 255 - 0.5) / 0.25 units
    again = xb.explain(tiny_model, images, "torchcam.SmoothGradCAMpp", num_samples=2)
    other = xb.explain(tiny_model, images, "torchcam.SmoothGradCAMpp", num_samples=2, seed=1)
    assert np.array_equal(exp.attributions, again.attributions)
    assert not np.allclose(exp.attributions, other.attributions)


def test_vit_token_grid(rgb_images) -> None:
    from conftest import TINY_PREPROCESS
    from test_layers import tiny_vit
    from xai_bridge.adapters.methods._layers import TokenGrid

    model = xb.TorchModel(tiny_vit(), TINY_PREPROCESS)
    exp = xb.explain(model, rgb_images, "torchcam.LayerCAM", targets=TARGETS)
    with (
        model.guard(),
        methods.LayerCAM(
            model.pixel_module(), model.module.blocks[-1].norm1, reshape_transform=TokenGrid(1, 4, 4)
        ) as extractor,
    ):
        (cam,) = extractor(TARGETS, model.pixel_module()(model.pixel_tensor(rgb_images)), normalized=False)
    assert np.allclose(exp.attributions[:, 0], upsample(cam.detach(), (40, 48)), atol=1e-6)
    assert exp.attributions.max() > 0 and hook_count(model.pixel_module()) == 0


def test_errors(tiny_model, rgb_images) -> None:
    with pytest.raises(ValueError, match="base_method: expected one of"):
        xb.explain(tiny_model, rgb_images, "torchcam.FinerCAM", base_method="ScoreCAM")
    with pytest.raises(ValueError, match="num_samples: expected a positive integer"):
        xb.explain(tiny_model, rgb_images, "torchcam.SSCAM", num_samples=0)
    with pytest.raises(ValueError, match="fc_layer: no submodule named 'head'"):
        xb.explain(tiny_model, rgb_images, "torchcam.CAM", fc_layer="head")
    with pytest.raises(ValueError, match="layer: 'pool' outputs shape"):
        xb.explain(tiny_model, rgb_images, "torchcam.GradCAM", layer="pool")
    with pytest.raises(ValueError, match="targets: class 9 is out of range"):
        xb.explain(tiny_model, rgb_images, "torchcam.GradCAM", targets=np.array([[9], [0]]))


def _state(net: torch.nn.Module) -> list:
    return [(n, m.training, type(m)) for n, m in net.named_modules()] + [
        (n, p.requires_grad, p.grad is None) for n, p in net.named_parameters()
    ]


def test_every_cam_method_in_sequence_leaves_the_model_as_it_was(tiny_model, rgb_images) -> None:
    """OmniXAI fails here ("Cannot use both regular backward hooks and full backward hooks")."""
    net = tiny_model.module
    net.train()
    net.features[3].eval()  # a mixed mode must come back as it was
    net.fc.bias.requires_grad_(False)
    children = [id(m) for m in net.modules()]
    before = _state(net)
    kind = {name: spec.model_kind for name, spec in xb.default_registry().specs.items()}
    names = [m for m in xb.available_methods() if m.split(".")[0] in ("gradcam", "torchcam") and kind[m] == "any"]
    assert len(names) >= 30
    small = {
        "torchcam.SSCAM": {"num_samples": 2},
        "torchcam.ISCAM": {"num_samples": 2},
        "torchcam.SmoothGradCAMpp": {"num_samples": 2},
        "gradcam.DeepFeatureFactorization": {"n_components": 2},
    }
    results = xb.explain_many(tiny_model, rgb_images, [(m, small.get(m, {})) for m in names], targets=[[1, 2], [3, 0]])
    for name, exp in results.items():
        assert exp.attributions.shape == (2, 2, 40, 48) and np.isfinite(exp.attributions).all(), name
    assert hook_count(tiny_model.pixel_module()) == 0
    assert not tiny_model.pixel_module()._forward_pre_hooks and not tiny_model.pixel_module()._forward_hooks
    assert _state(net) == before and [id(m) for m in net.modules()] == children
    # and the model still trains with a full backward hook afterwards
    net.features[0].register_full_backward_hook(lambda *a: None)
    net(torch.zeros(1, 3, 8, 8, requires_grad=True)).sum().backward()


@pytest.mark.slow
def test_effnet_chelsea_torchcam_layercam_in_the_cat(effnet, chelsea) -> None:
    exp = xb.explain(effnet, chelsea, "torchcam.LayerCAM", targets=285)
    heat = exp.attributions[0, 0]
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert exp.params["layer"] == "bn2" and 20 <= y < 300 and 40 <= x < 370, (y, x)
