"""Mask heads: each detection's mask in ``extras["regions"]`` (a segmenter's layout), outlined by the plots and report."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import random_images
from xai_bridge.adapters.models.detectors import DetectionModel

import xai_bridge as xb
from xai_bridge.detection import Detections, explain_detections
from xai_bridge.viz.outlines import outline_mask, region_edges

NAMES = ["background", "disc", "bar"]


def _scene() -> np.ndarray:
    img = np.full((48, 48, 3), 110, np.uint8)
    yy, xx = np.mgrid[:48, :48]
    img[(yy - 16) ** 2 + (xx - 16) ** 2 < 81] = (240, 60, 60)  # a disc centred (16, 16), radius 9
    img[30:40, 20:44] = (60, 60, 240)  # a bar
    return img


def _found(images: np.ndarray) -> list[dict[str, np.ndarray]]:
    """A disc and a bar, each found from its kept pixels, with its mask as torchvision gives it: (K, 1, H, W) floats."""
    out = []
    for im in images:
        red = (im[..., 0] > 200) & (im[..., 2] < 100)
        blue = (im[..., 2] > 200) & (im[..., 0] < 100)
        boxes, labels, scores, masks = [], [], [], []
        for label, pixels, full in ((1, red, 249.0), (2, blue, 240.0)):
            if pixels.any():
                rows, cols = np.nonzero(pixels)
                boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
                labels.append(label)
                scores.append(min(1.0, pixels.sum() / full))
                masks.append(np.where(pixels, 0.9, 0.2)[None])
        out.append(
            {
                "boxes": np.asarray(boxes, float).reshape(-1, 4),
                "labels": np.asarray(labels, np.int64),
                "scores": np.asarray(scores),
                "masks": np.asarray(masks, np.float32).reshape(-1, 1, *im.shape[:2]),
            }
        )
    return out


def test_masks_are_parsed_cut_at_one_half_and_taken_with_their_detections() -> None:
    [found] = [Detections.parse(d) for d in _found(_scene()[None])]
    assert found.masks is not None and found.masks.shape == (2, 48, 48) and found.masks.dtype == bool
    scene = _scene()
    np.testing.assert_array_equal(found.masks[0], (scene[..., 0] > 200) & (scene[..., 2] < 100))
    np.testing.assert_array_equal(found.take([1]).masks, found.masks[1:])
    bad = {"boxes": np.zeros((2, 4)), "labels": np.zeros(2), "scores": np.zeros(2), "masks": np.zeros((3, 8, 8))}
    with pytest.raises(xb.ModelInputError, match=r"'masks' has shape \(3, 8, 8\); expected one \(H, W\) mask per"):
        Detections.parse(bad)


def test_each_detections_mask_is_its_region_and_the_plots_outline_it(tmp_path: Path) -> None:
    det = DetectionModel(_found, class_names=NAMES)
    [exp] = explain_detections(det, _scene(), "builtin.DRISE", targets=xb.top_k(2), n_masks=16, grid=4)
    truth = Detections.parse(_found(_scene()[None])[0]).masks
    regions = exp.extras["regions"]
    assert regions.shape == (1, 2, 48, 48) and regions.dtype == bool
    np.testing.assert_array_equal(regions[0], truth[exp.targets[0] - 1])  # label 1 is mask 0, label 2 mask 1
    for t in range(2):  # what plot() and the report draw: the mask's contour (and the box)
        drawn = outline_mask(exp, 0, t, (48, 48))
        assert drawn is not None and (drawn >= region_edges(regions[0, t].astype(np.int8))).all()
    back = xb.Explanation.load(exp.save(tmp_path / "masks.npz"))
    np.testing.assert_array_equal(back.extras["regions"], regions)


def test_masks_of_another_size_are_one_line() -> None:
    def small(images: np.ndarray) -> list[dict[str, Any]]:
        return [{**d, "masks": d["masks"][:, :, ::2, ::2]} for d in _found(images)]

    with pytest.raises(xb.ModelInputError, match=r"detector: returned masks of \(24, 24\) pixels for an image of"):
        explain_detections(DetectionModel(small, class_names=NAMES), _scene(), "builtin.DRISE", n_masks=2, grid=4)


def test_a_detector_without_masks_has_no_regions() -> None:
    def boxes_only(images: np.ndarray) -> list[dict[str, Any]]:
        return [{k: v for k, v in d.items() if k != "masks"} for d in _found(images)]

    [exp] = explain_detections(DetectionModel(boxes_only, NAMES), _scene(), "builtin.DRISE", n_masks=2, grid=4)
    assert "regions" not in exp.extras and exp.extras["boxes"].shape == (1, 2, 4)


@pytest.mark.slow
def test_yolo_seg_masks_are_the_regions_at_the_images_size() -> None:
    """A YOLOv8n-seg from its yaml (random weights, nothing downloaded): predict's masks, at the image's size."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "xai-bridge-tests-ultralytics"))
    torch = pytest.importorskip("torch")
    ultralytics = pytest.importorskip("ultralytics")
    from xai_bridge.adapters.models.yolo import YOLODetector

    torch.manual_seed(0)
    yolo = ultralytics.YOLO("yolov8n-seg.yaml")
    with torch.no_grad():
        for branch in yolo.model.model[-1].cv3:  # class priors of ~1e-5 find nothing: random ones instead
            branch[-1].bias.normal_(0, 1)
    image = random_images((64, 80, 3), seed=2)
    det = YOLODetector(yolo, imgsz=64, conf=0.001)
    assert det.detect(image[None])[0].masks is None  # the perturbed images' pass: boxes only
    [found] = det.detect_masks(image[None])
    assert found.masks is not None and found.masks.shape == (len(found), 64, 80) and len(found) > 0
    direct = yolo.predict(
        np.ascontiguousarray(image[..., ::-1]), imgsz=64, conf=0.001, retina_masks=True, verbose=False
    )
    np.testing.assert_array_equal(found.masks, direct[0].masks.data.numpy() >= 0.5)
    [exp] = explain_detections(det, image, "builtin.DRISE", targets=xb.top_k(2), n_masks=4, grid=4)
    order = np.argsort(-found.scores, kind="stable")[:2]
    np.testing.assert_array_equal(exp.extras["regions"][0], found.masks[order])
