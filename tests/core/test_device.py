"""Device plumbing: ``TorchModel(device=)`` refusals, and methods creating their tensors on ``model.device``.

Without a GPU the second part runs with torch's default device set to
``meta`` (inside the test only, restored after): a tensor a method creates
without ``device=model.device`` then lands on ``meta`` and the CPU model
fails on it, which is what a CPU-made tensor meeting a CUDA model does. The
module's forward also asserts where its inputs are. The CUDA tests at the end
run only where a GPU is present.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
import torch
from conftest import TINY_PREPROCESS, make_tiny_net
from helpers import random_images
from xai_bridge.adapters.models.torch import _check_device

import xai_bridge as xb

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_a_device_other_than_the_modules_is_refused_in_one_line() -> None:
    with pytest.raises(xb.ModelInputError, match=r"^device: the module is on cpu, not cuda; move it first") as info:
        xb.TorchModel(make_tiny_net(), TINY_PREPROCESS, device="cuda")
    assert "\n" not in str(info.value)
    with pytest.raises(xb.ModelInputError, match=r"not meta"):
        xb.TorchModel(make_tiny_net(), TINY_PREPROCESS, device=torch.device("meta"))


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", 1.5, object()])
def test_a_device_torch_cannot_parse_is_refused_naming_the_argument(bad: object) -> None:
    with pytest.raises(xb.ModelInputError, match=r"^device: expected a torch device such as 'cpu'") as info:
        xb.TorchModel(make_tiny_net(), TINY_PREPROCESS, device=bad)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_a_module_on_the_meta_device_is_refused_before_any_call() -> None:
    with pytest.raises(xb.ModelInputError, match=r"^module: .*meta device"):
        xb.TorchModel(make_tiny_net().to("meta"), TINY_PREPROCESS)


def test_the_modules_device_is_accepted_however_it_is_spelt() -> None:
    for spelling in ("cpu", "cpu:0", torch.device("cpu"), None):
        model = xb.TorchModel(make_tiny_net(), TINY_PREPROCESS, device=spelling)
        assert model.device == torch.device("cpu")


def test_cuda_without_an_index_matches_the_gpu_a_module_was_moved_to() -> None:
    # module.to("cuda") puts parameters on cuda:0, and torch.device("cuda") != torch.device("cuda:0")
    _check_device("cuda", torch.device("cuda:0"))
    _check_device("cuda:1", torch.device("cuda:1"))
    with pytest.raises(xb.ModelInputError, match=r"on cuda:0, not cuda:1"):
        _check_device("cuda:1", torch.device("cuda:0"))
    with pytest.raises(xb.ModelInputError, match=r"on cuda:0, not cpu"):
        _check_device("cpu", torch.device("cuda:0"))


def test_efficientnet_lite0_refuses_a_bad_device_in_one_line() -> None:
    from xai_bridge.adapters.models import efficientnet_lite0

    with pytest.raises(xb.ModelInputError, match=r"^device: expected a torch device"):
        efficientnet_lite0(device="gpu")


class DeviceAsserting(torch.nn.Module):
    """The tiny net, refusing inputs that are not on ``device``."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.net = make_tiny_net(0)
        self.device = torch.device(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.device == self.device, f"input on {x.device}, the model on {self.device}"
        return self.net(x)


@contextmanager
def default_device(device: str) -> Iterator[None]:
    """torch's default device inside (a test-only switch of torch's global setting, restored after)."""
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device(None)


BUILTIN: dict[str, dict[str, Any]] = {
    "builtin.RISE": {"n_masks": 16, "grid": 3},
    "builtin.Occlusion": {"window": 8, "stride": 8},
    "builtin.Saliency": {},
}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_methods_make_their_tensors_on_the_models_device(name: str) -> None:
    images = random_images((2, 32, 32, 3), seed=1)
    model = xb.TorchModel(DeviceAsserting("cpu"), TINY_PREPROCESS, batch_size=8, tune_batch=False)
    expected = xb.explain(model, images, name, targets=[[1], [2]], seed=3, **BUILTIN[name])
    with default_device("meta"):
        exp = xb.explain(model, images, name, targets=[[1], [2]], seed=3, **BUILTIN[name])
    np.testing.assert_array_equal(exp.attributions, expected.attributions)


def test_the_meta_default_device_does_catch_a_tensor_made_without_a_device() -> None:
    # the check above can fail: a tensor made the careless way lands on meta and breaks the CPU model
    net = DeviceAsserting("cpu")
    net(torch.zeros(1, 3, 32, 32))
    with default_device("meta"), pytest.raises(AssertionError, match="input on meta"):
        net(torch.zeros(1, 3, 32, 32))


@cuda
@pytest.mark.parametrize("name", ["builtin.Saliency", "builtin.RISE", "builtin.Occlusion", "gradcam.GradCAM"])
def test_a_module_moved_to_cuda_explains_as_on_the_cpu(name: str) -> None:
    images = random_images((2, 32, 32, 3), seed=1)
    params = BUILTIN.get(name, {})
    on_cpu = xb.TorchModel(make_tiny_net(0), TINY_PREPROCESS, batch_size=8, tune_batch=False)
    net = make_tiny_net(0).to("cuda")  # the user moves the module; xai-bridge never does
    before = {k: v.clone() for k, v in net.state_dict().items()}
    on_gpu = xb.TorchModel(net, TINY_PREPROCESS, batch_size=8, tune_batch=False, device="cuda")
    assert on_gpu.device.type == "cuda"
    ref = xb.explain(on_cpu, images, name, targets=[[1], [2]], seed=3, **params)
    exp = xb.explain(on_gpu, images, name, targets=[[1], [2]], seed=3, **params)
    np.testing.assert_allclose(
        exp.attributions, ref.attributions, rtol=1e-3, atol=1e-4 * np.abs(ref.attributions).max()
    )
    assert all(v.device.type == "cuda" and torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert not net.training
