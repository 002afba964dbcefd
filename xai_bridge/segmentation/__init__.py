"""Semantic segmentation models: one map per region, through every method.

A segmenter gives class logits per pixel; the regions to explain are chosen
on the unperturbed image (a predicted class, or a user's ``xb.Region``), and
each (perturbed) image is scored by the region's summed class logits
(pytorch-grad-cam's ``SemanticSegmentationTarget``, defined once in
:mod:`.segmenter`). numpy only at import time.
"""

from .routing import as_segmenter, explain_segmentation
from .segmenter import GradientSegmenter, SegmentationScoreModel, Segmenter, region_scores
from .targets import Region

__all__ = [
    "GradientSegmenter",
    "Region",
    "SegmentationScoreModel",
    "Segmenter",
    "as_segmenter",
    "explain_segmentation",
    "region_scores",
]
