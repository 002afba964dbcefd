"""Target-layer choice, token-grid reshaping and module-tree safety shared by the CAM backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_PREPROCESS
from torch import nn
from xai_bridge.adapters._torch import ForwardCounter, children_restored, seeded
from xai_bridge.adapters.methods._layer_run import check_target_range
from xai_bridge.adapters.methods._layers import TokenGrid, choose_layer, layer_candidates, trace_layers

import xai_bridge as xb

timm_vit = pytest.importorskip("timm.models.vision_transformer")


def tiny_vit(seed: int = 0) -> nn.Module:
    """A 2-block timm ViT on 32x32 inputs (4x4 patches of 8 px + class token), no weights."""
    torch.manual_seed(seed)
    return timm_vit.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5
    ).eval()


def _x(model: xb.TorchModel, images: np.ndarray) -> torch.Tensor:
    return model.pixel_tensor(images[:1])


def test_automatic_layer_is_the_last_spatial_block(tiny_model, rgb_images) -> None:
    net = tiny_model.pixel_module()
    layer = choose_layer(tiny_model.module, net, _x(tiny_model, rgb_images), 0)
    assert layer.name == "features" and layer.module is tiny_model.module.features
    assert layer.shape == (1, 8, 32, 32) and layer.reshape_transform is None
    infos, out_shape = trace_layers(tiny_model.module, net, _x(tiny_model, rgb_images))
    assert out_shape == (1, 5)
    # ReLUs hold no conv/norm, the pool is 1x1, fc has no spatial dims: none is a candidate
    assert [c.name for c in layer_candidates(infos)] == ["features.0", "features.2", "features.3", "features"]


def test_shared_modules_are_not_chosen_automatically(rgb_images) -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.block = nn.Sequential(nn.Conv2d(4, 4, 1))  # called twice below
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.block(self.conv2(self.block(self.conv1(x))))
            return self.fc(x.mean(dim=(2, 3)))

    model = xb.TorchModel(Shared().eval(), TINY_PREPROCESS)
    layer = choose_layer(model.module, model.pixel_module(), _x(model, rgb_images), 0)
    assert layer.name == "conv2"


def test_explicit_layer_by_name_and_module(tiny_model, rgb_images) -> None:
    net, x = tiny_model.pixel_module(), _x(tiny_model, rgb_images)
    assert choose_layer(tiny_model.module, net, x, 0, "features.2").module is tiny_model.module.features[2]
    assert choose_layer(tiny_model.module, net, x, 0, tiny_model.module.features[3]).name == "features.3"
    # a ReLU is not an automatic candidate but may be chosen explicitly
    assert choose_layer(tiny_model.module, net, x, 0, "features.4").shape == (1, 8, 32, 32)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ("featurs", "no submodule named 'featurs'. Did you mean 'features'"),
        ("fc", "'fc' outputs shape (1, 5), which has no spatial dims"),
        ("pool", "'pool' outputs shape (1, 8, 1, 1), which has no spatial dims"),
        (nn.Conv2d(3, 3, 1), "is not part of the model"),
    ],
)
def test_layer_errors_list_candidates(tiny_model, rgb_images, layer, message) -> None:
    with pytest.raises(ValueError, match="layer: ") as err:
        choose_layer(tiny_model.module, tiny_model.pixel_module(), _x(tiny_model, rgb_images), 0, layer)
    assert message in str(err.value)
    assert "Candidates (last first): 'features' (1, 8, 32, 32)" in str(err.value)


def test_no_candidate_raises_listing_layers(rgb_images) -> None:
    model = xb.TorchModel(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3)), TINY_PREPROCESS)
    with pytest.raises(ValueError, match=r"layer: found no layer .* Layers \(last first\): '1' \(1, 3\)"):
        choose_layer(model.module, model.pixel_module(), _x(model, rgb_images), 0)


def test_reshape_transform_override_is_checked(tiny_model, rgb_images) -> None:
    net, x = tiny_model.pixel_module(), _x(tiny_model, rgb_images)
    flip = choose_layer(tiny_model.module, net, x, 0, "features", reshape_transform=lambda t: t.flip(-1))
    assert flip.reshape_transform is not None
    with pytest.raises(ValueError, match=r"reshape_transform: must map the output of 'fc' \(1, 5\)"):
        choose_layer(tiny_model.module, net, x, 0, "fc", reshape_transform=lambda t: t)
    with pytest.raises(TypeError, match="reshape_transform: expected a callable"):
        choose_layer(tiny_model.module, net, x, 0, reshape_transform="vit")


def test_token_grid_inference_and_layout() -> None:
    assert TokenGrid.infer(197) == TokenGrid(1, 14, 14)
    assert TokenGrid.infer(196) == TokenGrid(0, 14, 14)
    assert TokenGrid.infer(198, prefix_tokens=2) == TokenGrid(2, 14, 14)
    assert TokenGrid.infer(17) == TokenGrid(1, 4, 4)
    assert TokenGrid.infer(3) is None and TokenGrid.infer(197, prefix_tokens=0) is None
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    tokens = torch.randn(2, 197, 6)
    assert torch.equal(TokenGrid(1, 14, 14)(tokens), vit_reshape_transform(tokens, 14, 14))
    with pytest.raises(ValueError, match=r"expected tokens of shape \(N, 197, D\)"):
        TokenGrid(1, 14, 14)(torch.randn(2, 50, 6))


def test_vit_gets_last_block_norm1_and_a_token_grid(rgb_images) -> None:
    model = xb.TorchModel(tiny_vit(), TINY_PREPROCESS)
    layer = choose_layer(model.module, model.pixel_module(), _x(model, rgb_images), 0)
    # the final `norm` feeds only the class token to the head: its patch tokens get no gradient
    assert layer.name == "blocks.1.norm1"
    assert layer.reshape_transform == TokenGrid(1, 4, 4)
    # an explicit token layer also gets the grid automatically
    explicit = choose_layer(model.module, model.pixel_module(), _x(model, rgb_images), 0, "blocks.0.norm2")
    assert explicit.reshape_transform == TokenGrid(1, 4, 4)


def test_vit_with_average_pooling_uses_the_final_norm(rgb_images) -> None:
    torch.manual_seed(0)
    vit = timm_vit.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5, global_pool="avg", fc_norm=False
    ).eval()
    model = xb.TorchModel(vit, TINY_PREPROCESS)
    assert choose_layer(model.module, model.pixel_module(), _x(model, rgb_images), 0).name == "norm"


def test_check_target_range() -> None:
    check_target_range(np.array([[0, 4]]), 5)
    with pytest.raises(ValueError, match="targets: class 5 is out of range for a model with 5 outputs"):
        check_target_range(np.array([[0], [5]]), 5)


def test_children_restored_also_on_error(tiny_net) -> None:
    relu, conv = tiny_net.features[1], tiny_net.features[0]
    with pytest.raises(RuntimeError, match="boom"), children_restored(tiny_net):
        tiny_net.features[1] = nn.Identity()
        tiny_net.features._modules["extra"] = nn.ReLU()
        tiny_net.fc = nn.Linear(8, 2)
        raise RuntimeError("boom")
    assert tiny_net.features[1] is relu and tiny_net.features[0] is conv
    assert list(tiny_net.features._modules) == ["0", "1", "2", "3", "4"]
    assert tiny_net.fc.out_features == 5


def test_forward_counter_counts_images_and_removes_its_hook(tiny_model, rgb_images) -> None:
    net = tiny_model.pixel_module()
    with ForwardCounter(net) as counter:
        net(tiny_model.pixel_tensor(rgb_images))
        net(tiny_model.pixel_tensor(rgb_images[:1]))
    assert counter.count == 3 and len(net._forward_pre_hooks) == 0


def test_seeded_restores_global_generators() -> None:
    np.random.seed(1)
    torch.manual_seed(1)
    expected_np, expected_torch = np.random.rand(), torch.rand(1)
    np.random.seed(1)
    torch.manual_seed(1)
    with seeded(7):
        first = (np.random.rand(), torch.rand(1))
    assert np.random.rand() == expected_np and torch.equal(torch.rand(1), expected_torch)
    with seeded(7):
        assert (np.random.rand(), torch.rand(1)) == first


def _inplace_net(seed: int = 0) -> nn.Module:
    """conv -> BatchNorm -> in-place ReLU -> pool -> linear: an in-place op right after the CAM layer."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
    return net.eval()


def test_gradient_stop_cuts_the_graph_below_the_layer_and_keeps_the_gradient(rgb_images) -> None:
    from xai_bridge.adapters.methods._layer_run import gradient_stop
    from xai_bridge.adapters.models import hook_count

    model = xb.TorchModel(_inplace_net(), TINY_PREPROCESS, tune_batch=False)
    net, x = model.pixel_module(), model.pixel_tensor(rgb_images)
    layer = choose_layer(model.module, net, x[:1], 0, "1")
    seen: dict[str, torch.Tensor] = {}

    def keep(_m, inp, out):
        seen["input_tracked"] = inp[0].requires_grad
        seen["out"] = out

    def gradient(stop: bool) -> np.ndarray:
        handle = layer.module.register_forward_hook(keep)
        try:
            with model.guard(freeze_params=True), gradient_stop(layer if stop else None) as stopped:
                assert stopped is stop
                scores = net(x.clone().requires_grad_(not stop))
                (g,) = torch.autograd.grad(scores[:, 2].sum(), seen["out"])
        finally:
            handle.remove()
        assert seen["input_tracked"] is (not stop)  # with the stop nothing before the layer is recorded
        return g.numpy()

    hooks = hook_count(model.module)
    assert np.allclose(gradient(True), gradient(False), rtol=1e-6, atol=1e-8)
    assert np.abs(gradient(True)).max() > 0
    assert hook_count(model.module) == hooks


def test_gradient_stop_skips_a_layer_that_runs_twice() -> None:
    from xai_bridge.adapters.methods._layer_run import gradient_stop
    from xai_bridge.adapters.methods._layers import TargetLayer

    relu = nn.ReLU()
    with gradient_stop(TargetLayer("relu", relu, (1, 3, 4, 4), None, calls=2)) as stopped:
        assert stopped is False and not relu._forward_hooks


@pytest.mark.parametrize(
    "method",
    [
        "gradcam.GradCAM",
        "gradcam.GradCAMPlusPlus",
        "gradcam.LayerCAM",
        "gradcam.ScoreCAM",
        "torchcam.GradCAM",
        "torchcam.LayerCAM",
        "torchcam.SmoothGradCAMpp",
    ],
)
def test_cams_are_the_same_with_and_without_the_gradient_stop(rgb_images, monkeypatch, method) -> None:
    """Even with an in-place op right after the layer (where the libraries disagree with each other)."""
    from contextlib import contextmanager

    pytest.importorskip({"gradcam": "pytorch_grad_cam", "torchcam": "torchcam"}[method.split(".")[0]])
    from xai_bridge.adapters.methods import _layer_run as backend  # the methods import gradient_stop from here per call

    real = backend.gradient_stop
    used = []

    @contextmanager
    def spy(layer):
        with real(layer) as stopped:
            used.append(stopped)
            yield stopped

    @contextmanager
    def no_stop(layer):
        yield False

    model = xb.TorchModel(_inplace_net(1), TINY_PREPROCESS, tune_batch=False)
    images = rgb_images.copy()
    monkeypatch.setattr(backend, "gradient_stop", spy)
    stopped = xb.explain(model, images, method, targets=[2, 3], layer="1").attributions
    monkeypatch.setattr(backend, "gradient_stop", no_stop)
    full = xb.explain(model, images, method, targets=[2, 3], layer="1").attributions
    assert used == [True] and np.abs(full).max() > 0
    assert np.allclose(stopped, full, rtol=1e-6, atol=1e-9)
    assert np.array_equal(images, rgb_images)
