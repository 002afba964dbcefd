"""A perturbed image's pass on a Mask or Keypoint R-CNN: the model's box path only, the boxes of its whole pass.

Only the explained image's masks and keypoints are used, so
``TorchvisionDetector.detect`` runs torchvision's R-CNN without its mask and
keypoint heads (half to two thirds of a pass at 128 px); ``detect_masks``
runs the whole model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import random_images

import xai_bridge as xb

torch = pytest.importorskip("torch")
detection = pytest.importorskip("torchvision.models.detection")
from xai_bridge.adapters.models.detectors import TorchvisionDetector, _has_boxes_pass  # noqa: E402

#: 64 px, 20 proposals: the box head on 1000 is most of a pass at this size
SMALL = {"min_size": 64, "max_size": 64, "rpn_pre_nms_top_n_test": 50, "rpn_post_nms_top_n_test": 20}


@pytest.fixture(scope="module", params=["MaskRCNN", "KeypointRCNN"])
def rcnn(request: pytest.FixtureRequest) -> Any:
    torch.manual_seed(0)
    build = detection.maskrcnn_resnet50_fpn if request.param == "MaskRCNN" else detection.keypointrcnn_resnet50_fpn
    return build(weights=None, weights_backbone=None, box_score_thresh=0.0, box_detections_per_img=4, **SMALL).eval()


def test_the_perturbed_images_pass_finds_the_whole_pass_boxes_without_the_heads(
    rcnn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = [random_images((64, 64, 3), seed=1), random_images((72, 96, 3), seed=2)]
    for im in images:
        im[16:48, 24:56] = (240, 200, 40)
    det = TorchvisionDetector(rcnn, batch_size=2)
    head = rcnn.roi_heads.mask_head if rcnn.roi_heads.has_mask() else rcnn.roi_heads.keypoint_head
    runs: list[str] = []
    forward = head.forward

    def counted(*args: Any) -> Any:  # not a hook: a hook in a head keeps the whole pass (the next test)
        runs.append("head")
        return forward(*args)

    monkeypatch.setattr(head, "forward", counted)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: two threads on a shared 2-core machine only contend
    try:
        boxes_only = [det.detect(im[None])[0] for im in images]
        assert runs == []  # no mask or keypoint head ran
        full = [det.detect_masks(im[None])[0] for im in images]
        assert runs == ["head", "head"]
        with torch.no_grad():  # one image a pass, as detect is given them: a batch pads to its largest image
            direct = [rcnn([torch.from_numpy(im).permute(2, 0, 1).float() / 255])[0] for im in images]
    finally:
        torch.set_num_threads(threads)
    for mine, whole, called in zip(boxes_only, full, direct, strict=True):
        assert mine.masks is None and mine.keypoints is None and len(mine) == 4
        np.testing.assert_array_equal(mine.boxes, called["boxes"].numpy())  # bitwise: the same ops in order
        np.testing.assert_array_equal(mine.scores, called["scores"].numpy())
        np.testing.assert_array_equal(mine.labels, called["labels"].numpy())
        np.testing.assert_array_equal(whole.boxes, mine.boxes)
        assert (whole.masks if "masks" in called else whole.keypoints) is not None


def test_a_hook_or_a_subclass_of_the_model_gets_its_whole_pass(rcnn: Any) -> None:
    assert _has_boxes_pass(rcnn)
    handle = rcnn.register_forward_hook(lambda module, args, out: out)
    try:
        assert not _has_boxes_pass(rcnn)  # the hook may change what the model returns: it runs as the user set it
    finally:
        handle.remove()
    head = rcnn.roi_heads.mask_head if rcnn.roi_heads.has_mask() else rcnn.roi_heads.keypoint_head
    handle = head[0].register_forward_hook(lambda module, args, out: out)  # a CAM layer in the head, say
    try:
        assert not _has_boxes_pass(rcnn)
    finally:
        handle.remove()
    own = type("Own", (type(rcnn),), {"forward": lambda self, images: type(rcnn).forward(self, images)})
    subclassed = own.__new__(own)
    subclassed.__dict__.update(rcnn.__dict__)  # the same modules, under a forward of the user's
    assert not _has_boxes_pass(subclassed)
    faster = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=2)
    assert not _has_boxes_pass(faster)  # no head to skip: the model's own pass


def test_a_gradient_method_explains_the_same_scores_through_the_box_path(rcnn: Any) -> None:
    """Saliency through the box path equals Saliency through the whole pass (kept by a hook on the model)."""
    image = random_images((64, 64, 3), seed=1)
    image[16:48, 24:56] = (240, 200, 40)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        [boxes_only] = xb.explain(rcnn, image, "builtin.Saliency", targets=xb.top_k(2), progress=False)
        handle = rcnn.register_forward_hook(lambda module, args, out: out)
        try:
            [whole] = xb.explain(rcnn, image, "builtin.Saliency", targets=xb.top_k(2), progress=False)
        finally:
            handle.remove()
    finally:
        torch.set_num_threads(threads)
    assert np.abs(boxes_only.attributions).reshape(2, -1).max(axis=1).min() > 0
    np.testing.assert_allclose(boxes_only.attributions, whole.attributions, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(boxes_only.extras["boxes"], whole.extras["boxes"])
