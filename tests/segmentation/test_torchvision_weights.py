"""A torchvision weights enum read without downloading: its resize, mean/std and categories, as its transforms apply them."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_images

import xai_bridge as xb

torch = pytest.importorskip("torch")


def test_the_weights_transforms_and_categories_are_those_of_torchvision() -> None:
    from torchvision.models.segmentation import LRASPP_MobileNet_V3_Large_Weights, lraspp_mobilenet_v3_large

    weights = LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1
    torch.manual_seed(0)
    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    seg = xb.TorchvisionSegmenter(net, weights=weights)
    assert seg.class_names == list(weights.meta["categories"]) and seg.class_names[7] == "car"
    image = random_images((26, 39, 3), seed=2)  # shorter edge 26: resized to 520 x 780 as the transforms do
    ours = seg.segment(image[None])[0]
    assert ours.shape == (21, 26, 39)
    with torch.no_grad():
        x = weights.transforms()(torch.from_numpy(image).permute(2, 0, 1))[None]
        assert tuple(x.shape[-2:]) == (520, 780)
        ref = net(x)["out"]
        ref = torch.nn.functional.interpolate(ref, size=(26, 39), mode="bilinear", align_corners=False)[0].numpy()
    # torchvision resizes the uint8 image (rounded to whole levels), xai-bridge the float pixels
    assert np.abs(ours - ref).max() <= 0.01 * (ref.max() - ref.min())
    routed = xb.segmentation.as_segmenter(net, weights)  # what xb.explain(net, ..., preprocess=weights) explains
    assert (
        isinstance(routed, xb.TorchvisionSegmenter) and routed.resize == 520 and routed.class_names == seg.class_names
    )


def test_classification_weights_are_refused_in_one_line() -> None:
    from torchvision.models import ResNet18_Weights
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    with pytest.raises(xb.ParameterError, match=r"^preprocess: expected the model's torchvision segmentation weights"):
        xb.explain(net, random_images((16, 16, 3)), "builtin.Occlusion", preprocess=ResNet18_Weights.DEFAULT)
