"""Model factories for CLI ``module:function`` specs (``cli_models:tiny``, ``cli_models:box``).

tests/ is on ``sys.path`` (pytest ``pythonpath``), so the CLI can import this module by name
or load it as ``tests/cli_models.py:tiny``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

N_CLASSES = 4


def tiny() -> nn.Module:
    """A seeded conv net for 3-channel images of any size: conv -> ReLU -> global pool -> linear (4 classes)."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, N_CLASSES)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net.eval()


def box() -> Callable[[np.ndarray], np.ndarray]:
    """A black-box function of uint8 NHWC images: two scores, the mean red and the mean blue value."""

    def predict(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, np.float32) / 255.0
        return np.stack([x[..., 0].mean(axis=(1, 2)), x[..., 2].mean(axis=(1, 2))], axis=1)

    return predict


def broken() -> nn.Module:
    """A factory that fails, to check the CLI reports it."""
    raise RuntimeError("broken factory")
