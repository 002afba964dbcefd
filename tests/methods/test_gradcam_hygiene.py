"""pytorch-grad-cam runs leave Python's random state alone and work on bfloat16 models."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, TINY_PREPROCESS, make_tiny_net
from helpers import random_images

import xai_bridge as xb


@pytest.mark.slow  # a fresh interpreter importing torch and the library: ~10 s
def test_the_first_gradcam_call_keeps_the_global_random_state() -> None:
    """In a fresh process, where the call imports the library: random's state is the same after it."""
    code = textwrap.dedent(
        """
        import random, sys
        import numpy as np
        sys.path.insert(0, "tests")
        from conftest import make_tiny_net, TINY_PREPROCESS
        import xai_bridge as xb
        model = xb.TorchModel(make_tiny_net(0), TINY_PREPROCESS, tune_batch=False)
        images = np.zeros((1, 16, 16, 3), np.uint8)
        random.seed(7)
        before = random.getstate()
        assert "pytorch_grad_cam" not in sys.modules
        xb.explain(model, images, "gradcam.GradCAM", targets=1)
        assert "pytorch_grad_cam" in sys.modules
        print(random.getstate() == before)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


class HalfNet(torch.nn.Module):
    """A bfloat16 network that takes float pixels (it casts its input), as half-precision deployments do."""

    def __init__(self, net: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.net, self.dtype = net.to(dtype), dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.dtype)).float()


def test_gradcam_on_a_bfloat16_model_matches_float32() -> None:
    images = random_images((2, 32, 32, 3), seed=4)
    half = HalfNet(make_tiny_net(0)).eval()
    model = xb.TorchModel(half, TINY_PREPROCESS, class_names=TINY_CLASSES, batch_size=8, tune_batch=False)
    before = {k: v.clone() for k, v in half.state_dict().items()}
    for name in ("gradcam.GradCAM", "gradcam.FullGrad"):
        exp = xb.explain(model, images, name, targets=[[1], [3]])
        ref = xb.explain(
            xb.TorchModel(make_tiny_net(0), TINY_PREPROCESS, class_names=TINY_CLASSES, batch_size=8, tune_batch=False),
            images,
            name,
            targets=[[1], [3]],
        )
        assert exp.attributions.dtype == np.float32 and np.isfinite(exp.attributions).all()
        scale = np.abs(ref.attributions).max()
        # bfloat16 keeps 8 bits of mantissa: close on average (FullGrad's per-layer min-max moves a few pixels more)
        assert scale > 0 and np.abs(exp.attributions - ref.attributions).mean() <= 0.01 * scale, name
    assert all(torch.equal(v, before[k]) for k, v in half.state_dict().items())
    assert not half.training and all(p.dtype == torch.bfloat16 and p.grad is None for p in half.parameters())
