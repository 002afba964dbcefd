"""Model adapters: preprocessing, batching, and restoring the user's model state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_PREPROCESS, make_tiny_net
from helpers import random_images
from xai_bridge.adapters.models import ArrayModel, BlackBoxModel, TorchModel, hook_count, model_guard

import xai_bridge as xb


def manual_forward(net: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """What a user would write by hand: resize, /255, mean/std, NCHW, forward."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    x = (x / 255.0 - 0.5) / 0.25
    with torch.no_grad():
        return net(x).numpy()


def test_torch_model_matches_manual_preprocessing(tiny_net, rgb_images) -> None:
    model = TorchModel(tiny_net, TINY_PREPROCESS, batch_size=1)
    assert np.allclose(model.predict(rgb_images), manual_forward(tiny_net, rgb_images), atol=1e-5)


def test_batching_does_not_change_outputs(tiny_net, rgb_images) -> None:
    many = np.concatenate([rgb_images] * 5)
    a = TorchModel(tiny_net, TINY_PREPROCESS, batch_size=3).predict(many)
    b = TorchModel(tiny_net, TINY_PREPROCESS, batch_size=10).predict(many)
    assert a.shape == (10, 5)
    assert np.allclose(a, b, atol=1e-5)


def test_softmax_option_gives_probabilities(tiny_net, rgb_images) -> None:
    logits = TorchModel(tiny_net, TINY_PREPROCESS).predict(rgb_images)
    probs_model = TorchModel(tiny_net, TINY_PREPROCESS, softmax=True)
    assert probs_model.output_kind is xb.OutputKind.PROBABILITIES
    assert np.allclose(probs_model.predict(rgb_images), xb.softmax(logits), atol=1e-6)


def test_state_restored_after_predict_even_in_train_mode(rgb_images) -> None:
    net = make_tiny_net(1)
    net.train()
    net.fc.eval()  # a mixed state must come back exactly
    net.features[0].weight.requires_grad_(False)
    handle = net.fc.register_forward_hook(lambda *a: None)
    running_mean = net.features[3].running_mean.clone()
    model = TorchModel(net, TINY_PREPROCESS)
    model.predict(rgb_images)
    assert net.training and not net.fc.training and net.features[0].training
    assert not net.features[0].weight.requires_grad and net.fc.weight.requires_grad
    assert hook_count(net) == 1  # the user's own hook is kept
    assert torch.equal(net.features[3].running_mean, running_mean)  # eval mode: BN stats untouched
    handle.remove()


def test_guard_restores_on_exception_and_removes_leaked_hooks() -> None:
    net = make_tiny_net(2).train()
    grad_before = torch.ones_like(net.fc.weight)
    net.fc.weight.grad = grad_before
    with pytest.raises(RuntimeError, match="boom"), model_guard(net, freeze_params=True):
        assert not net.training and not net.fc.weight.requires_grad
        net.features[0].register_forward_hook(lambda *a: None)
        net.fc.register_full_backward_hook(lambda *a: None)
        net.fc.weight.grad = None
        raise RuntimeError("boom")
    assert net.training and net.fc.weight.requires_grad
    assert net.fc.weight.grad is grad_before
    assert hook_count(net) == 0
    net.fc.register_backward_hook(lambda *a: None)  # no "both regular and full backward hooks" error


def test_pixel_module_is_differentiable_at_image_resolution(tiny_model, rgb_images) -> None:
    x = tiny_model.pixel_tensor(rgb_images).requires_grad_(True)
    assert x.shape == (2, 3, 40, 48) and float(x.detach().max()) <= 255
    with tiny_model.guard(freeze_params=True):
        tiny_model.pixel_module()(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_model.module.parameters())


def test_preprocess_numpy_and_torch_agree_without_resize(tiny_net) -> None:
    pre = xb.Preprocess(scale="symmetric", mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7), channel_order="BGR")
    images = random_images((2, 8, 9, 3), seed=3)
    expected = ((images[..., ::-1] / 127.5 - 1.0) - [0.1, 0.2, 0.3]) / [0.5, 0.6, 0.7]
    assert np.allclose(pre.apply(images), np.transpose(expected, (0, 3, 1, 2)), atol=1e-5)
    model = TorchModel(torch.nn.Identity(), pre)
    out = model.pixel_module()(model.pixel_tensor(images)).numpy()
    assert np.allclose(out, np.transpose(expected, (0, 3, 1, 2)), atol=1e-5)


def test_preprocess_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="Preprocess.std"):
        xb.Preprocess(std=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="Preprocess.layout"):
        xb.Preprocess(layout="CHW")
    with pytest.raises(ValueError, match="Preprocess.size"):
        xb.Preprocess(size=(0, 3))


def test_keras_style_array_model_gets_nhwc_in_symmetric_range(rgb_images) -> None:
    seen = {}

    def keras_predict(x: np.ndarray) -> np.ndarray:
        seen["shape"], seen["min"], seen["max"] = x.shape, x.min(), x.max()
        x -= 1000  # Keras preprocess_input works in place: must not touch our data
        return x.mean(axis=(1, 2))

    model = ArrayModel(keras_predict, xb.Preprocess.inception(size=(12, 10)), batch_size=1)
    before = rgb_images.copy()
    out = model.predict(rgb_images)
    assert seen["shape"] == (1, 12, 10, 3) and seen["min"] >= -1.0 and seen["max"] <= 1.0
    assert out.shape == (2, 3)
    assert np.array_equal(rgb_images, before)


def test_black_box_gets_uint8_copies(rgb_images) -> None:
    def fn(x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.uint8 and x.shape[1:] == (40, 48, 3)
        x[...] = 0
        return np.stack([x.mean(axis=(1, 2, 3)), np.ones(len(x))], axis=1)

    before = rgb_images.copy()
    assert BlackBoxModel(fn).predict(rgb_images).shape == (2, 2)
    assert np.array_equal(rgb_images, before)


def test_bad_model_outputs_and_arguments(tiny_net, rgb_images) -> None:
    with pytest.raises(ValueError, match="model: expected outputs"):
        BlackBoxModel(lambda x: np.zeros((len(x) + 1, 2))).predict(rgb_images)
    with pytest.raises(ValueError, match="batch_size"):
        TorchModel(tiny_net, TINY_PREPROCESS, batch_size=0)
    with pytest.raises(ValueError, match="never moves your model"):
        TorchModel(tiny_net, TINY_PREPROCESS, device="meta")
    with pytest.raises(TypeError, match="preprocess: a torch module needs"):
        xb.as_model(tiny_net)
    with pytest.raises(TypeError, match="model: expected"):
        xb.as_model(42)


def test_as_model_picks_the_adapter(tiny_net) -> None:
    assert isinstance(xb.as_model(tiny_net, preprocess=TINY_PREPROCESS), TorchModel)
    assert isinstance(xb.as_model(lambda x: x, preprocess=xb.Preprocess.inception()), ArrayModel)
    assert isinstance(xb.as_model(lambda x: x), BlackBoxModel)
    model = TorchModel(tiny_net, TINY_PREPROCESS)
    assert xb.as_model(model) is model
    assert isinstance(model, xb.DifferentiableModel)
    assert not isinstance(BlackBoxModel(lambda x: x), xb.DifferentiableModel)


def test_counting_model_counts_images(tiny_model, rgb_images) -> None:
    counted = xb.CountingModel(tiny_model)
    counted.predict(rgb_images)
    counted.predict(rgb_images[:1])
    assert counted.count == 3
    assert counted.class_names == tiny_model.class_names


@pytest.mark.slow
def test_real_efficientnet_classifies_skimage_samples(effnet, chelsea, coffee) -> None:
    assert effnet.predict(chelsea[None]).argmax() == 285  # Egyptian cat
    assert effnet.predict(coffee[None]).argmax() == 967  # espresso
    assert effnet.class_names[285] == "Egyptian cat"
    assert not effnet.module.training


def test_guard_restores_transformers_output_capturing_flag() -> None:
    net = make_tiny_net(5)
    net.fc.__dict__["_output_capturing_hooks_installed"] = True
    with model_guard(net):
        net.features.__dict__["_output_capturing_hooks_installed"] = True
        net.fc.__dict__["_output_capturing_hooks_installed"] = False
    assert "_output_capturing_hooks_installed" not in net.features.__dict__
    assert net.fc.__dict__["_output_capturing_hooks_installed"] is True
