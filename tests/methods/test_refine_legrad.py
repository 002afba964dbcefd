"""gradcam.RefineCAM, torchcam.RefineCAM and torchcam.LeGrad: parity with the libraries called directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_CLASSES, TINY_PREPROCESS, tiny_model_of_kind
from helpers import assert_close, module_state, random_images
from torch import nn

import xai_bridge as xb

TARGETS = [[1, 3], [0, 2]]


class TwoScaleNet(nn.Module):
    """Three resolutions (32, 16, 8): the default RefineCAM layers are the last conv of each."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stage1 = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stage3(self.stage2(self.stage1(x))).mean((2, 3)))


def _model() -> xb.TorchModel:
    return xb.TorchModel(
        TwoScaleNet().eval(), TINY_PREPROCESS, class_names=TINY_CLASSES, batch_size=8, tune_batch=False
    )


def test_default_layers_are_the_last_of_each_resolution() -> None:
    exp = xb.explain(_model(), random_images((2, 32, 32, 3), seed=3), "gradcam.RefineCAM", targets=TARGETS)
    assert exp.params["layers"] == ["stage1", "stage2", "stage3"]


def test_gradcam_refinecam_equals_the_library() -> None:
    from pytorch_grad_cam import GradCAMPlusPlus, RefineCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, images = _model(), random_images((2, 32, 32, 3), seed=3)
    before = module_state(model.module)
    exp = xb.explain(model, images, "gradcam.RefineCAM", targets=TARGETS)
    assert module_state(model.module) == before
    net, x = model.pixel_module(), model.pixel_tensor(images)
    layers = [model.module.stage1, model.module.stage2, model.module.stage3]
    with model.guard():
        refine = RefineCAM(net, layers, None, base_method=GradCAMPlusPlus)
        expected = np.stack([refine(x, [ClassifierOutputTarget(t[j]) for t in TARGETS]) for j in range(2)], 1)
        for cam in refine.base_cam_per_layer:
            cam.activations_and_grads.release()
    assert_close(exp.attributions, expected, rel=1e-5)
    assert np.allclose(exp.attributions.max(axis=(-2, -1)), 1, atol=1e-5)  # the library's map is normalised
    assert xb.default_registry().spec("gradcam.RefineCAM").normalised


def test_torchcam_refinecam_equals_the_library_raw_and_normalised() -> None:
    from torchcam.methods import GradCAMpp, RefineCAM

    model, images = _model(), random_images((2, 32, 32, 3), seed=4)
    exp = xb.explain(model, images, "torchcam.RefineCAM", targets=TARGETS, layers=["stage2", "stage3"])
    net, x = model.pixel_module(), model.pixel_tensor(images)
    raw, scaled = [], []
    with model.guard(), RefineCAM(net, ["model.stage2", "model.stage3"], base_method=GradCAMpp) as extractor:
        for j in range(2):
            for normalized, out in ((False, raw), (True, scaled)):
                scores = net(x.clone().requires_grad_(True))
                (cam,) = extractor([t[j] for t in TARGETS], scores, normalized=normalized)
                out.append(cam.detach())
    up = [F.interpolate(c[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0] for c in raw]
    assert_close(exp.attributions, torch.stack(up, 1).numpy(), rel=1e-5)
    lo, hi = exp.extras["layer_range"][..., 0], exp.extras["layer_range"][..., 1]
    for j in range(2):  # the layer range reproduces torchcam's normalised map
        rebuilt = (raw[j] - torch.tensor(lo[:, j])[:, None, None]) / torch.tensor(hi[:, j] - lo[:, j])[:, None, None]
        assert_close(rebuilt.numpy(), scaled[j].numpy(), rel=1e-4)


def test_refinecam_refuses_one_layer() -> None:
    with pytest.raises(xb.ParameterError, match="layers: expected a list of two or more layers"):
        xb.explain(_model(), random_images((1, 32, 32, 3)), "torchcam.RefineCAM", targets=1, layers=["stage3"])


def test_torchcam_legrad_equals_the_library_on_a_torchvision_vit() -> None:
    from torchcam.methods import LeGrad

    model, images = tiny_model_of_kind("transformer"), random_images((2, 32, 32, 3), seed=5)
    exp = xb.explain(model, images, "torchcam.LeGrad", targets=TARGETS)
    net, vit = model.pixel_module(), model.module
    expected = []
    with (
        model.guard(),
        LeGrad(net, list(vit.encoder.layers), score_projection=lambda t: vit.heads(vit.encoder.ln(t.mean(1)))) as ex,
    ):
        for j in range(2):
            scores = net(model.pixel_tensor(images))
            (cam,) = ex([t[j] for t in TARGETS], scores, normalized=False)
            expected.append(F.interpolate(cam[:, None].detach(), size=(32, 32), mode="bilinear")[:, 0])
    assert_close(exp.attributions, torch.stack(expected, 1).numpy(), rel=1e-5)
    assert exp.attributions.max() > 0


def test_torchcam_legrad_refuses_other_models_in_one_line() -> None:
    with pytest.raises(xb.MethodNotApplicableError, match="torchcam.LeGrad needs a torchvision VisionTransformer.*"):
        xb.explain(_model(), random_images((1, 32, 32, 3)), "torchcam.LeGrad", targets=1)
