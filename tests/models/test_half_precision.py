"""Half-precision torch models (bfloat16, float16) run every method family, fed their own dtype."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import xai_bridge as xb


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 3),
    ).eval()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["gradcam.GradCAM", "captum.Saliency", "builtin.Occlusion"])
def test_a_half_precision_model_explains_like_its_float32_copy(dtype: torch.dtype, method: str) -> None:
    full = _net()
    half = copy.deepcopy(full).to(dtype)
    before = [p.detach().clone() for p in half.parameters()]
    img = np.random.default_rng(0).integers(0, 255, (1, 16, 16, 3), dtype=np.uint8)
    pre = xb.Preprocess.imagenet(16)
    kw = {"window": 4, "stride": 4} if method == "builtin.Occlusion" else {}
    a = xb.explain(full, img, method, targets=0, preprocess=pre, progress=False, **kw)
    b = xb.explain(half, img, method, targets=0, preprocess=pre, progress=False, **kw)
    assert b.attributions.dtype == np.float32 and np.isfinite(b.attributions).all()
    corr = np.corrcoef(a.attributions.ravel(), b.attributions.ravel())[0, 1]
    assert corr > 0.9, corr  # the same map up to half-precision rounding
    assert all(p.dtype == dtype for p in half.parameters())  # the user's model keeps its dtype and weights
    assert all(torch.equal(p, q) for p, q in zip(half.parameters(), before, strict=True))
