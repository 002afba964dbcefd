"""Tiny segmenters for the segmentation tests: a colour rule (numpy), a trained FCN, a saved SegFormer."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

NAMES = ["background", "red", "blue"]


def scene() -> np.ndarray:
    """A grey 32x40 image with a red square (rows 4-14, cols 4-14) and a blue one (rows 16-28, cols 20-36)."""
    img = np.full((32, 40, 3), 120, np.uint8)
    img[4:14, 4:14] = (250, 30, 30)
    img[16:28, 20:36] = (30, 30, 250)
    return img


class ColourSegmenter:
    """A black-box segmenter: per pixel, logits of background / red / blue from the colour's distance."""

    class_names = NAMES
    batch_size = 8

    def __init__(self) -> None:
        self.images = 0

    def segment(self, images: np.ndarray) -> np.ndarray:
        self.images += len(images)
        x = np.asarray(images, np.float32)
        red = 1 - np.abs(x - np.array([250, 30, 30], np.float32)).mean(-1) / 80
        blue = 1 - np.abs(x - np.array([30, 30, 250], np.float32)).mean(-1) / 80
        return np.stack([np.zeros_like(red), red, blue], axis=1)


def square_batch(n: int, rng: np.random.Generator, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Noise images (0-110) with one bright square (190-255) each, and its bool mask."""
    images = rng.integers(0, 110, (n, size, size, 3)).astype(np.uint8)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        side = int(rng.integers(8, 14))
        y, x = rng.integers(0, size - side, 2)
        images[i, y : y + side, x : x + side] = rng.integers(190, 256, (side, side, 3))
        masks[i, y : y + side, x : x + side] = True
    return images, masks


def trained_fcn(steps: int = 80, seed: int = 0) -> Any:
    """A tiny torchvision FCN (three convolutions) trained for seconds to segment the bright square as class 1."""
    import torch
    from torch import nn
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN
    from xai_bridge.adapters.models.segmenters import TorchvisionSegmenter

    torch.manual_seed(seed)
    body = nn.Sequential(
        OrderedDict(
            c1=nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
            c2=nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU()),
            c3=nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
        )
    )
    net = FCN(IntermediateLayerGetter(body, {"c3": "out"}), nn.Conv2d(16, 2, 1))
    seg = TorchvisionSegmenter(net)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine (20x slower)
    try:
        for _ in range(steps):
            images, masks = square_batch(16, rng)
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
            loss = nn.functional.cross_entropy(seg.segment_torch(x), torch.from_numpy(masks).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    return net


def saved_segformer(folder: Path) -> Any:
    """A tiny random SegFormer (3 classes) and its processor, saved with save_pretrained and loaded back."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        num_labels=3,
        id2label=dict(enumerate(NAMES)),
        label2id={n: i for i, n in enumerate(NAMES)},
    )
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return SegformerForSemanticSegmentation.from_pretrained(folder).eval()
