"""BatchTuner: the fastest chunk size from the real calls, out-of-memory fallback, same outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_PREPROCESS, make_tiny_net
from xai_bridge.adapters.models import TorchModel

from xai_bridge.batching import BatchTuner


class FakeModel:
    """Outputs each image's mean; costs ``fixed + per_image(size) * size`` seconds on a fake clock."""

    def __init__(self, per_image: dict[int, float], fail_above: int | None = None) -> None:
        self.now = 0.0
        self.per_image = per_image
        self.fail_above = fail_above
        self.seen: list[int] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        if self.fail_above is not None and len(chunk) > self.fail_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.seen.extend(chunk[:, 0, 0, 0].tolist())
        self.now += self.per_image.get(len(chunk), 1.0) * len(chunk)
        return chunk.reshape(len(chunk), -1).mean(axis=1, keepdims=True)


def _images(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 3), np.float32)


def test_picks_the_fastest_size_per_image_without_repeating_work() -> None:
    fake = FakeModel({1: 3.0, 2: 2.0, 4: 1.0, 8: 1.5, 16: 2.5})
    tuner = BatchTuner(16, clock=fake.clock)
    images = _images(100)
    out = tuner(fake, images)
    assert np.array_equal(out[:, 0], images.reshape(100, -1).mean(axis=1))
    assert fake.seen == list(range(100))  # every image once, in order
    assert tuner.chosen(images.shape[1:]) == 4
    fake.seen.clear()
    tuner(fake, _images(12))
    assert fake.seen == list(range(12))


def test_near_ties_go_to_the_larger_size() -> None:
    fake = FakeModel({1: 1.0, 2: 1.0, 4: 1.04, 8: 2.0})
    tuner = BatchTuner(8, clock=fake.clock)
    tuner(fake, _images(60))
    assert tuner.chosen((2, 2, 3)) == 4


def test_timing_continues_across_calls() -> None:
    fake = FakeModel({1: 1.0, 2: 0.5, 4: 0.9})
    tuner = BatchTuner(4, clock=fake.clock)
    tuner(fake, _images(3))  # too few images to time every size (partial chunks are not timed)
    assert tuner.chosen((2, 2, 3)) is None
    for _ in range(6):
        tuner(fake, _images(5))
    assert tuner.chosen((2, 2, 3)) == 2


def test_out_of_memory_halves_the_largest_chunk() -> None:
    fake = FakeModel({1: 4.0, 2: 3.0, 4: 2.0, 8: 1.0}, fail_above=8)
    tuner = BatchTuner(32, clock=fake.clock)
    out = tuner(fake, _images(80))
    assert len(out) == 80 and fake.seen == list(range(80))
    assert tuner.largest == 8 and tuner.chosen((2, 2, 3)) == 8


def test_other_errors_propagate() -> None:
    def broken(chunk: np.ndarray) -> np.ndarray:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        BatchTuner(8)(broken, _images(4))


def test_tuned_torch_model_predicts_like_fixed_batches(rgb_images) -> None:
    images = np.concatenate([rgb_images] * 20)  # 40 images
    tuned = TorchModel(make_tiny_net(0), TINY_PREPROCESS, batch_size=8)
    fixed = TorchModel(make_tiny_net(0), TINY_PREPROCESS, batch_size=8, tune_batch=False)
    for _ in range(3):
        np.testing.assert_allclose(tuned.predict(images), fixed.predict(images), rtol=1e-5, atol=1e-6)
    assert tuned._tuner is not None and tuned._tuner.chosen(images.shape[1:]) in (1, 2, 4, 8)


def test_channels_last_gives_the_same_outputs_and_gradients(rgb_images) -> None:
    import torch

    import xai_bridge as xb

    net = make_tiny_net(0)
    plain = TorchModel(net, TINY_PREPROCESS, batch_size=8, channels_last=False)
    fast = TorchModel(net, TINY_PREPROCESS, batch_size=8, channels_last=True)
    seen: list[bool] = []
    net.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    out = fast.predict(rgb_images)
    assert seen and all(seen)  # the module got channels-last input
    seen.clear()
    np.testing.assert_allclose(out, plain.predict(rgb_images), rtol=1e-5, atol=1e-5)
    assert seen and not any(seen)
    a = xb.explain(fast, rgb_images, "builtin.Saliency", targets=[1, 2])
    b = xb.explain(plain, rgb_images, "builtin.Saliency", targets=[1, 2])
    np.testing.assert_allclose(a.attributions, b.attributions, rtol=1e-4, atol=1e-6)
    assert all(p.is_contiguous() for p in net.parameters())  # weights untouched


def _layout_seen(model: TorchModel, images: np.ndarray) -> list[bool]:
    """Whether each forward pass of ``model.predict(images)`` handed the module channels-last input."""
    import torch

    seen: list[bool] = []
    handle = model.module.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        model.predict(images)
    finally:
        handle.remove()
    return seen


def test_channels_last_is_on_automatically_when_the_outputs_match(rgb_images) -> None:
    import torch

    net = make_tiny_net(0)
    state = torch.random.get_rng_state()
    auto = TorchModel(net, TINY_PREPROCESS, batch_size=8)
    auto.predict(rgb_images[:1])  # the first guarded call decides (its two probe passes reach user hooks)
    seen = _layout_seen(auto, rgb_images)
    assert auto.channels_last and seen and all(seen)
    assert torch.equal(torch.random.get_rng_state(), state)  # the probe's noise has its own generator
    assert not net._forward_hooks and not net._forward_pre_hooks and not net.training
    forced = TorchModel(net, TINY_PREPROCESS, batch_size=8, channels_last=False)
    assert not any(_layout_seen(forced, rgb_images)) and not forced.channels_last


class _LayoutSensitive(torch.nn.Module):
    """A conv net whose output depends on the memory layout (as a custom kernel reading raw memory would)."""

    def __init__(self, reject: bool) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.reject = reject

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.reject:
            return y.view(len(y), -1)[:, :5]  # view needs contiguous memory: fails on channels-last
        flat = y.contiguous() if x.is_contiguous() else y.permute(0, 2, 3, 1)
        return flat.reshape(len(y), -1)[:, :5]


@pytest.mark.parametrize("reject", [False, True])
def test_channels_last_stays_off_when_the_module_differs_or_fails(rgb_images, reject: bool) -> None:
    model = TorchModel(_LayoutSensitive(reject), TINY_PREPROCESS, batch_size=8)
    model.predict(rgb_images[:1])
    seen = _layout_seen(model, rgb_images)
    assert not model.channels_last and seen and not any(seen)
    assert model.predict(rgb_images).shape == (len(rgb_images), 5)  # and the model works as before


def test_pixel_tensor_of_any_strides_and_one_guard_inside_inference(rgb_images, monkeypatch) -> None:
    from xai_bridge.adapters.models import torch as torch_model

    model = TorchModel(make_tiny_net(0), TINY_PREPROCESS, batch_size=8, tune_batch=False)
    scrambled = np.moveaxis(np.ascontiguousarray(np.moveaxis(rgb_images, 0, -1)), -1, 0)  # batch axis innermost
    assert not scrambled.flags.c_contiguous
    x = model.pixel_tensor(scrambled)
    assert x.is_contiguous(memory_format=torch.channels_last if model.channels_last else torch.contiguous_format)
    assert torch.equal(x, model.pixel_tensor(np.ascontiguousarray(rgb_images)))
    guards: list[int] = []
    real = torch_model.model_guard

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        guards.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch_model, "model_guard", counting)
    expected = model.predict(rgb_images)
    assert len(guards) == 1
    guards.clear()
    with model.inference():
        outs = [model.predict(rgb_images[i : i + 1]) for i in range(len(rgb_images))]
    assert len(guards) == 1  # one guard for all the calls inside
    np.testing.assert_allclose(np.concatenate(outs), expected, rtol=1e-5, atol=1e-6)
