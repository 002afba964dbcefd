"""Tiny seeded fixtures shared by every test module.

Fast tests use ``tiny_net`` (a 2-conv CNN, 5 classes) on small random images;
tests marked ``slow`` use the real EfficientNet-Lite0 on scikit-image samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from helpers import random_images  # noqa: E402
from torch import nn  # noqa: E402

import xai_bridge as xb  # noqa: E402
from xai_bridge._load_order import triton_before_tensorflow  # noqa: E402

triton_before_tensorflow()  # test modules import TensorFlow (directly or through Quantus) in any order

torch.set_num_threads(2)


class TinyNet(nn.Module):
    """conv(3->6) -> ReLU -> conv(6->8) -> ReLU -> global avg pool -> linear(8->5)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def make_tiny_net(seed: int = 0) -> TinyNet:
    """A freshly initialised TinyNet; deterministic for a given seed."""
    gen = torch.Generator().manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        net.features[3].running_mean.copy_(torch.randn(8, generator=gen) * 0.1)
        net.features[3].running_var.copy_(torch.rand(8, generator=gen) + 0.5)
    return net.eval()


TINY_PREPROCESS = xb.Preprocess(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
TINY_CLASSES = ("cat", "dog", "car", "tree", "cup")


@pytest.fixture
def tiny_net() -> TinyNet:
    return make_tiny_net(0)


@pytest.fixture
def tiny_model(tiny_net: TinyNet) -> xb.TorchModel:
    # fixed chunks: parity tests compare bit for bit with libraries that chunk predict calls their own way,
    # and a tuned chunk size changes float rounding (~1e-8); tuning is tested in test_batch_tuner.py
    return xb.TorchModel(tiny_net, TINY_PREPROCESS, class_names=TINY_CLASSES, batch_size=8, tune_batch=False)


@pytest.fixture
def rgb_images() -> np.ndarray:
    """Two seeded random uint8 images, (2, 40, 48, 3)."""
    return random_images((2, 40, 48, 3))


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    from skimage import data

    return data.chelsea()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    from skimage import data

    return data.coffee()


@pytest.fixture(scope="session")
def effnet():
    """The real EfficientNet-Lite0 (ImageNet weights, offline) as a TorchModel."""
    pytest.importorskip("timm")
    from xai_bridge.adapters.models import efficientnet_lite0

    return efficientnet_lite0(batch_size=16)


def make_pngs(folder: Path, n: int = 2, size: int = 16, seed: int = 0) -> list[Path]:
    """``n`` seeded random RGB PNGs ``img0.png``... of ``size`` x ``size`` in ``folder`` (created)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def tiny_model_of_kind(kind: str = "any") -> Any:
    """A fresh tiny model for a method's ``MethodSpec.model_kind``: the CNN, a 2-layer ViT, or a detector's score model."""
    if kind == "transformer":
        import torch
        from torchvision.models import VisionTransformer

        torch.manual_seed(0)
        vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5)
        torch.nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision starts the head at zero
        return xb.TorchModel(vit.eval(), TINY_PREPROCESS, class_names=TINY_CLASSES, batch_size=8, tune_batch=False)
    if kind == "detector":
        from xai_bridge.detection import DetectionScoreModel

        detector = xb.DetectionModel(_quadrant_detections, class_names=TINY_CLASSES[:4])
        targets = detector.detect(np.zeros((1, 24, 24, 3), np.uint8))[0]
        return DetectionScoreModel(detector, targets, TINY_CLASSES[:4])
    return xb.TorchModel(make_tiny_net(0), TINY_PREPROCESS, class_names=TINY_CLASSES, batch_size=8, tune_batch=False)


def _quadrant_detections(images: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Four detections per image, one per quadrant (label = quadrant), scored by the quadrant's brightness."""
    boxes = np.array([[0, 0, 12, 12], [12, 0, 24, 12], [0, 12, 12, 24], [12, 12, 24, 24]], float)
    out = []
    for im in images:
        scores = [im[y0:y1, x0:x1].mean() / 255 + 0.01 for x0, y0, x1, y1 in boxes.astype(int)]
        out.append({"boxes": boxes, "labels": np.arange(4), "scores": np.asarray(scores)})
    return out
