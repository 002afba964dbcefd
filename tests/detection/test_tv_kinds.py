"""torchvision's RetinaNet, FCOS, Mask R-CNN and Keypoint R-CNN, recognised with no wrapper, explained end to end.

Random weights (nothing downloaded) at 64 px, the weights enums only for
their categories. Each kind runs one gradient method (Saliency) and one
perturbation method (D-RISE); the detections on the result are those the
model finds when called directly, and the model is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from helpers import random_images

import xai_bridge as xb

torch = pytest.importorskip("torch")
detection = pytest.importorskip("torchvision.models.detection")
from xai_bridge.adapters.models import hook_count  # noqa: E402

from xai_bridge.detection.routing import is_detector  # noqa: E402

SMALL = {"min_size": 64, "max_size": 64}
#: R-CNNs: 20 proposals instead of 1000 (the box head on 1000 proposals is most of a pass at 64 px)
FEW = {"rpn_pre_nms_top_n_test": 50, "rpn_post_nms_top_n_test": 20, **SMALL}


def _retinanet() -> Any:
    return detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, score_thresh=0.0, detections_per_img=3, **SMALL
    )


def _fcos() -> Any:
    net = detection.fcos_resnet50_fpn(
        weights=None, weights_backbone=None, score_thresh=0.0, detections_per_img=3, **SMALL
    )
    with torch.no_grad():  # random regression around 0 gives empty boxes (ReLU'd distances); a box per anchor instead
        net.head.regression_head.bbox_reg.bias.fill_(1.0)
    return net


def _maskrcnn() -> Any:
    return detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0, box_detections_per_img=3, **FEW
    )


def _keypointrcnn() -> Any:
    return detection.keypointrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0, box_detections_per_img=3, **FEW
    )


#: kind -> (builder, its weights enum: categories only, nothing is downloaded)
KINDS: dict[str, tuple[Callable[[], Any], Any]] = {
    "RetinaNet": (_retinanet, detection.RetinaNet_ResNet50_FPN_Weights.COCO_V1),
    "FCOS": (_fcos, detection.FCOS_ResNet50_FPN_Weights.COCO_V1),
    "MaskRCNN": (_maskrcnn, detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1),
    "KeypointRCNN": (_keypointrcnn, detection.KeypointRCNN_ResNet50_FPN_Weights.COCO_V1),
}


def settings(net: Any) -> dict[tuple[str, str], Any]:
    """Every plain setting of every submodule: modes, score and NMS thresholds, the transform's sizes and means."""
    plain = (bool, int, float, str, tuple, list, type(None))
    return {
        (name, key): value
        for name, m in net.named_modules()
        for key, value in vars(m).items()
        if isinstance(value, plain)
    }


def _image() -> np.ndarray:
    img = random_images((64, 64, 3), seed=3)
    img[16:48, 20:44] = (240, 200, 40)
    return img


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small tensors: on a shared 2-core machine two threads only contend (10x slower), as in seg_models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("kind", list(KINDS))
def test_recognised_with_no_wrapper_and_explained_end_to_end(kind: str) -> None:
    build, weights = KINDS[kind]
    torch.manual_seed(0)
    net = build().eval()
    image = _image()
    with torch.no_grad():
        direct = net([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]  # the model called directly
    net.train()  # the user's mode, and a frozen layer: both as they were afterwards
    net.backbone.body.conv1.requires_grad_(False)
    before = (settings(net), [p.requires_grad for p in net.parameters()], hook_count(net))
    categories = weights.meta["categories"]

    assert is_detector(net)
    for method, params in (("builtin.Saliency", {}), ("builtin.DRISE", {"n_masks": 4, "grid": 4})):
        [exp] = xb.explain(net, image, method, targets=xb.top_k(2), preprocess=weights, progress=False, **params)
        assert exp.attributions.shape == (1, 2, 64, 64) and np.isfinite(exp.attributions).all()
        if method == "builtin.Saliency":  # each detection has a gradient of its own
            assert (np.abs(exp.attributions).reshape(2, -1).max(axis=1) > 0).all()
        else:  # D-RISE weights masks by similarities in [0, 1]; 4 masks may find one detection in none of them
            assert (exp.attributions >= 0).all() and exp.attributions.max() > 0
        np.testing.assert_allclose(exp.extras["boxes"][0], direct["boxes"][:2].numpy(), atol=1e-3)
        np.testing.assert_allclose(exp.scores[0], direct["scores"][:2].numpy(), atol=1e-5)
        labels = direct["labels"][:2].tolist()
        assert exp.targets[0].tolist() == labels
        assert exp.target_names[0].tolist() == [
            f"{categories[c]} {s:.2f}" for c, s in zip(labels, direct["scores"][:2].tolist(), strict=True)
        ]
        assert exp.params["detector"] == "TorchvisionDetector"
        if kind == "MaskRCNN":  # the mask head's masks, at the image's size, as a segmenter's regions
            assert exp.extras["regions"].dtype == bool
            np.testing.assert_array_equal(exp.extras["regions"][0], direct["masks"][:2, 0].numpy() >= 0.5)
        else:
            assert "regions" not in exp.extras
    assert before == (settings(net), [p.requires_grad for p in net.parameters()], hook_count(net))
    assert all(p.grad is None for p in net.parameters())
