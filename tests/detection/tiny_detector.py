"""A tiny detector trained in seconds on synthetic images, implementing ``GradientDetector``.

Images are 48x48 noise with one bright 16x16 square. A 3-layer CNN predicts,
per 4-pixel cell, whether the cell is the centre of a square (one class,
"square"); each cell is an anchor box of the square's size. ``detect_torch``
returns the anchors whose score passes ``score_floor`` (scores differentiable
in the pixels), as torchvision does after its score threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from xai_bridge.detection import Detections

SIZE, SQUARE, STRIDE = 48, 16, 4


def square_image(rng: np.random.Generator, y0: int, x0: int) -> np.ndarray:
    """uint8 (48, 48, 3): dark noise with a bright square whose top-left corner is ``(y0, x0)``."""
    img = rng.integers(0, 90, (SIZE, SIZE, 3)).astype(np.uint8)
    img[y0 : y0 + SQUARE, x0 : x0 + SQUARE] = rng.integers(200, 256, (SQUARE, SQUARE, 3))
    return img


class SquareNet(nn.Module):
    """Pixels in [0, 1] -> per-cell logits (N, 12, 12)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 5, padding=2),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))[:, 0]


def train_square_net(steps: int = 80, seed: int = 0) -> SquareNet:
    """SquareNet trained to find each square's centre cell (a few seconds on 2 cores)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = SquareNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    cells = SIZE // STRIDE
    for _ in range(steps):
        corners = rng.integers(0, SIZE - SQUARE + 1, (8, 2))
        x = torch.from_numpy(np.stack([square_image(rng, y, x) for y, x in corners])).permute(0, 3, 1, 2) / 255
        target = torch.zeros(8, cells, cells)
        for i, (y, x0) in enumerate(corners):
            cy, cx = (y + SQUARE // 2) // STRIDE, (x0 + SQUARE // 2) // STRIDE
            target[i, max(cy - 1, 0) : cy + 1, max(cx - 1, 0) : cx + 1] = 1.0
        loss = nn.functional.binary_cross_entropy_with_logits(net(x), target, pos_weight=torch.tensor(8.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


class SquareDetector:
    """SquareNet as a :class:`~xai_bridge.detection.GradientDetector`: one anchor box per cell."""

    def __init__(self, net: SquareNet, score_floor: float = 0.3, top: int = 5) -> None:
        self.module = net
        self.class_names = ["background", "square"]
        self.batch_size = 16
        self.score_floor = score_floor
        self.top = top
        self.cam_layer = "features"
        self.torch_calls = 0
        self.images = 0
        centres = (np.arange(SIZE // STRIDE) * STRIDE + STRIDE / 2).astype(np.float32)
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        half = SQUARE / 2
        anchors = np.stack([cx - half, cy - half, cx + half, cy + half], -1).reshape(-1, 4)
        self.anchors = torch.from_numpy(np.clip(anchors, 0, SIZE))

    def detect_torch(self, pixels: torch.Tensor) -> list[dict[str, Any]]:
        """The ``top`` best anchors per image whose score passes ``score_floor``."""
        self.torch_calls += 1
        self.images += len(pixels)
        scores = torch.sigmoid(self.module(pixels)).flatten(1)
        out = []
        for row in scores:
            order = torch.argsort(row, descending=True)[: self.top]
            keep = order[row[order] >= self.score_floor]
            out.append(
                {"boxes": self.anchors[keep], "labels": torch.ones(len(keep), dtype=torch.int64), "scores": row[keep]}
            )
        return out

    def detect(self, images: np.ndarray) -> list[Detections]:
        """Detections of uint8 ``(N, H, W, 3)`` images."""
        from xai_bridge.adapters._torch import model_guard

        with model_guard(self.module), torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
            return [Detections.parse(d) for d in self.detect_torch(x)]
