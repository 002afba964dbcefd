"""The torch twin of :class:`~xai_bridge.segmentation.SegmentationScoreModel`: region scores with gradients.

:class:`RegionScoreModel` is a :class:`~xai_bridge.adapters.models.TorchModel`
whose network maps pixels to each target region's summed class logits
``(N, T)``, so every gradient, CAM and perturbation method explains a
segmenter unchanged; CAM layers are named in the user's own module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_bridge.models import OutputKind
from xai_bridge.preprocess import Preprocess

from .torch import TorchModel

__all__ = ["RegionScoreModel", "RegionSums"]


class RegionSums(nn.Module):
    """Pixels in ``[0, 1]`` -> the segmenter's logits -> each region's class logits summed: ``(N, T)``.

    ``SemanticSegmentationTarget(category, mask)(output)`` of pytorch-grad-cam,
    one column per target. The user's module is a child, so guards cover it.

    Args:
        segmenter: a :class:`~xai_bridge.segmentation.GradientSegmenter`.
        regions: bool ``(T, H, W)``.
        classes: int ``(T,)``.
    """

    def __init__(self, segmenter: Any, regions: np.ndarray, classes: np.ndarray) -> None:
        super().__init__()
        self.net = segmenter.module
        self.segment = segmenter.segment_torch
        device = next((p.device for p in self.net.parameters()), torch.device("cpu"))
        self.register_buffer("regions", torch.from_numpy(np.asarray(regions, np.float32)).to(device))
        self.register_buffer("classes", torch.from_numpy(np.asarray(classes, np.int64)).to(device))
        self.training = False  # the wrapper's own flag; the user's module keeps its mode

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.segment(pixels)
        picked = logits[:, self.classes]  # (N, T, H, W)
        return (picked * self.regions).sum(dim=(2, 3))  # type: ignore[no-any-return]


class RegionScoreModel(TorchModel):
    """A gradient segmenter plus target regions as a differentiable model with one output per region.

    Args:
        segmenter: a :class:`~xai_bridge.segmentation.GradientSegmenter`.
        regions: bool ``(T, H, W)`` target regions.
        classes: int ``(T,)`` their classes.
        names: one display name per target.
    """

    def __init__(self, segmenter: Any, regions: np.ndarray, classes: np.ndarray, names: Sequence[str]) -> None:
        self.segmenter = segmenter
        super().__init__(
            RegionSums(segmenter, regions, classes),
            Preprocess(),  # [0, 255] pixels -> [0, 1]; the segmenter normalises itself
            output_kind=OutputKind.SCORES,
            class_names=list(names),
            batch_size=segmenter.batch_size,
            channels_last=False,
        )

    @property
    def module(self) -> nn.Module:
        """The user's segmentation module: CAM layers are chosen and named in it."""
        return self.segmenter.module  # type: ignore[no-any-return]

    @property
    def output_count(self) -> int:
        """One output per target region."""
        classes: Any = self._module.classes
        return int(classes.shape[0])

    def __repr__(self) -> str:
        return f"RegionScoreModel({self.segmenter!r}, {self.output_count} targets)"
