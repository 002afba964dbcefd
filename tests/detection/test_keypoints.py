"""Keypoint heads: each detection's keypoints in ``extras["keypoints"]``, in the image's pixels, drawn with its box.

Masks and keypoints are read for the explained image only: a perturbed
image's pass reads boxes, labels and scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import random_images
from matplotlib.collections import PathCollection
from xai_bridge.adapters.models.detectors import DetectionModel

import xai_bridge as xb
from xai_bridge.detection import Detections, explain_detections
from xai_bridge.viz.outlines import outline_mask

torch = pytest.importorskip("torch")
detection = pytest.importorskip("torchvision.models.detection")

NAMES = ["background", "square"]
#: three keypoints of the square: its top-left corner, its centre, its bottom-right corner (hidden)
VISIBLE = np.array([1.0, 2.0, 0.0])


def _square(images: np.ndarray) -> list[dict[str, np.ndarray]]:
    """The bright square, found from its kept pixels, with three keypoints and a mask as a Keypoint/Mask R-CNN."""
    out = []
    for im in images:
        bright = im.min(axis=-1) > 200
        if not bright.any():
            out.append({"boxes": np.zeros((0, 4)), "labels": np.zeros(0), "scores": np.zeros(0)})
            continue
        rows, cols = np.nonzero(bright)
        x0, y0, x1, y1 = cols.min(), rows.min(), cols.max() + 1.0, rows.max() + 1.0
        points = np.array([[x0, y0], [(x0 + x1) / 2, (y0 + y1) / 2], [x1, y1]])
        out.append(
            {
                "boxes": np.array([[x0, y0, x1, y1]]),
                "labels": np.array([1]),
                "scores": np.array([bright.sum() / 256.0]),
                "masks": bright[None, None].astype(np.float32),
                "keypoints": np.concatenate([points, VISIBLE[:, None]], axis=1)[None],
                "keypoints_scores": np.array([[3.0, 5.0, -1.0]]),
            }
        )
    return out


def _scene() -> np.ndarray:
    img = np.full((40, 48, 3), 60, np.uint8)
    img[8:24, 20:36] = 250  # a 16x16 square, 256 pixels
    return img


def test_keypoints_are_parsed_checked_and_taken_with_their_detections() -> None:
    [found] = [Detections.parse(d) for d in _square(_scene()[None])]
    assert found.keypoints is not None and found.keypoints_scores is not None
    np.testing.assert_array_equal(found.keypoints[0], [[20, 8, 1], [28, 16, 2], [36, 24, 0]])
    np.testing.assert_array_equal(found.take([0]).keypoints_scores, [[3.0, 5.0, -1.0]])
    assert found.take(np.zeros(1, bool)).keypoints.shape == (0, 3, 3)
    one = _square(_scene()[None])[0]
    with pytest.raises(xb.ModelInputError, match=r"'keypoints' has shape \(1, 3, 2\); expected \(x, y, visibility\)"):
        Detections.parse({**one, "keypoints": one["keypoints"][..., :2]})
    with pytest.raises(xb.ModelInputError, match=r"'keypoints_scores' has shape \(1, 2\); expected one score per"):
        Detections.parse({**one, "keypoints_scores": np.zeros((1, 2))})


def test_a_perturbed_images_pass_reads_boxes_only() -> None:
    det = DetectionModel(_square, NAMES)
    [boxes_only] = det.detect(_scene()[None])
    [full] = det.detect_masks(_scene()[None])
    assert boxes_only.masks is None and boxes_only.keypoints is None and boxes_only.keypoints_scores is None
    assert full.masks is not None and full.keypoints is not None and full.keypoints_scores is not None
    np.testing.assert_array_equal(boxes_only.boxes, full.boxes)


def test_each_detections_keypoints_are_on_the_result_plotted_and_saved(tmp_path: Path) -> None:
    [exp] = explain_detections(DetectionModel(_square, NAMES), _scene(), "builtin.DRISE", n_masks=8, grid=4)
    np.testing.assert_array_equal(exp.extras["keypoints"], [[[[20, 8, 1], [28, 16, 2], [36, 24, 0]]]])
    np.testing.assert_array_equal(exp.extras["keypoints_scores"], [[[3.0, 5.0, -1.0]]])
    fig = exp.plot()  # a dot on each visible keypoint, where imshow puts pixel i's centre at i
    dots = [c.get_offsets() for ax in fig.axes for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots) == 1
    np.testing.assert_allclose(dots[0], [[19.5, 7.5], [27.5, 15.5]])
    drawn = outline_mask(exp, 0, 0, (40, 48))  # the report: a plus on each visible keypoint, with the box's edges
    assert drawn is not None and drawn[16, 28] and drawn[15, 28] and drawn[16, 27]
    assert not drawn[24, 36] and not drawn[25, 36]  # the hidden keypoint, past the box: nothing drawn
    half = outline_mask(exp, 0, 0, (20, 24))  # a shrunk thumbnail: the centre keypoint scaled with the image
    assert half is not None and half[8, 14]
    back = xb.Explanation.load(exp.save(tmp_path / "keypoints.npz"))
    np.testing.assert_array_equal(back.extras["keypoints"], exp.extras["keypoints"])


def test_a_detector_without_keypoints_has_none_on_the_result() -> None:
    def boxes_only(images: np.ndarray) -> list[dict[str, Any]]:
        return [{k: d[k] for k in ("boxes", "labels", "scores")} for d in _square(images)]

    [exp] = explain_detections(DetectionModel(boxes_only, NAMES), _scene(), "builtin.DRISE", n_masks=2, grid=4)
    assert "keypoints" not in exp.extras and "keypoints_scores" not in exp.extras


@pytest.fixture(scope="module")
def keypoint_rcnn() -> Any:
    """torchvision's Keypoint R-CNN, random weights, 64 px, 20 proposals (the box head on 1000 is most of a pass)."""
    torch.manual_seed(0)
    net = detection.keypointrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=2,
        num_keypoints=17,
        min_size=64,
        max_size=64,
        box_score_thresh=0.0,
        box_detections_per_img=3,
        rpn_pre_nms_top_n_test=50,
        rpn_post_nms_top_n_test=20,
    )
    return net.eval()


@pytest.mark.parametrize("shape", [(64, 64, 3), (72, 96, 3)], ids=["the model's size", "resized by 2/3"])
def test_keypoint_rcnn_keypoints_are_the_models_in_the_images_pixels(keypoint_rcnn: Any, shape: Any) -> None:
    """The keypoints the model gives called directly, mapped back by its transform from 64 px as its boxes are."""
    image = random_images(shape, seed=3)
    image[16:48, 24:56] = (240, 200, 40)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: two threads on a shared 2-core machine only contend
    try:
        with torch.no_grad():
            direct = keypoint_rcnn([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
        [exp] = xb.explain(keypoint_rcnn, image, "builtin.DRISE", targets=xb.top_k(2), n_masks=2, grid=4)
    finally:
        torch.set_num_threads(threads)
    points, scores = direct["keypoints"][:2].numpy(), direct["keypoints_scores"][:2].numpy()
    assert exp.extras["keypoints"].shape == (1, 2, 17, 3) and exp.extras["keypoints_scores"].shape == (1, 2, 17)
    assert np.ptp(points[..., :2], axis=1).max(axis=1).min() > 1  # not degenerate: the keypoints of a detection differ
    np.testing.assert_allclose(exp.extras["keypoints"][0], points, atol=1e-4)
    np.testing.assert_allclose(exp.extras["keypoints_scores"][0], scores, atol=1e-4)
    np.testing.assert_allclose(exp.extras["boxes"][0], direct["boxes"][:2].numpy(), atol=1e-4)
    if shape[1] > 64:  # in the image's pixels, past the 64 px the model ran at
        assert exp.extras["keypoints"][0, ..., 0].max() > 64
