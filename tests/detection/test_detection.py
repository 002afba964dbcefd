"""Object detectors: detections, target selection, the D-RISE score, D-RISE and perturbation methods per detection."""

from __future__ import annotations

import numpy as np
import pytest
from xai_bridge.adapters.methods.builtin import sample_masks
from xai_bridge.adapters.models.detectors import DetectionModel, TorchvisionDetector

import xai_bridge as xb
from xai_bridge.detection import Detections, DetectionScoreModel, box_iou, explain_detections, similarity

SQUARES = {"red": ((250, 30, 30), (8, 8, 28, 28)), "blue": ((30, 30, 250), (36, 30, 60, 54))}
NAMES = ["background", "red", "blue"]


def scene() -> np.ndarray:
    """A grey 64x64 image with a red and a blue square (boxes as (x0, y0, x1, y1))."""
    img = np.full((64, 64, 3), 120, np.uint8)
    for colour, (x0, y0, x1, y1) in SQUARES.values():
        img[y0:y1, x0:x1] = colour
    return img


class ColourDetector:
    """Finds each coloured square: a box around the kept pixels of its colour, score = the share kept."""

    def __init__(self) -> None:
        self.calls = 0
        self.images = 0

    def __call__(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        self.calls += 1
        self.images += len(images)
        out = []
        for im in np.asarray(images, np.int16):
            boxes, labels, scores = [], [], []
            for label, (colour, (x0, y0, x1, y1)) in enumerate(SQUARES.values(), start=1):
                hit = np.all(np.abs(im - np.asarray(colour)) < 40, axis=-1)
                ys, xs = np.nonzero(hit)
                if len(ys):
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    labels.append(label)
                    scores.append(hit.sum() / ((x1 - x0) * (y1 - y0)))
            out.append(
                {
                    "boxes": np.asarray(boxes, float).reshape(-1, 4),
                    "labels": np.asarray(labels, int),
                    "scores": np.asarray(scores, float),
                }
            )
        return out


def detector() -> tuple[DetectionModel, ColourDetector]:
    fn = ColourDetector()
    return DetectionModel(fn, class_names=NAMES), fn


def test_iou_and_similarity() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 20, 20]], float)
    b = np.array([[5, 5, 15, 15]], float)
    np.testing.assert_allclose(box_iou(a, b)[:, 0], [25 / 175, 100 / 400])
    target = Detections(a[:1], np.array([1]), np.array([0.9]))
    found = Detections(np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float), np.array([2, 1]), np.array([0.99, 0.4]))
    assert similarity(target, found)[0] == pytest.approx(0.4)  # same class only, weighted by its score
    probs = Detections(a[:1], np.array([1]), np.array([0.9]), probabilities=np.array([[0.0, 0.6, 0.8]]))
    seen = Detections(b, np.array([1]), np.array([0.5]), probabilities=np.array([[0.0, 0.8, 0.6]]))
    assert similarity(probs, seen)[0] == pytest.approx(25 / 175 * 0.96)  # IoU x cosine x objectness 1
    assert similarity(target, Detections(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0)))[0] == 0


def test_targets_select_detections() -> None:
    det, _ = detector()
    img = scene()
    by_default = explain_detections(det, img, "builtin.Occlusion", window=8, stride=8)[0]
    assert list(by_default.target_names[0]) == ["red 1.00", "blue 1.00"]
    np.testing.assert_array_equal(by_default.extras["boxes"][0], [[8, 8, 28, 28], [36, 30, 60, 54]])
    np.testing.assert_array_equal(by_default.targets, [[1, 2]])
    [blue] = explain_detections(det, img, "builtin.Occlusion", targets="blue", window=8, stride=8)
    assert list(blue.target_names[0]) == ["blue 1.00"]
    [boxed] = explain_detections(det, img, "builtin.Occlusion", targets=xb.Box(30, 28, 62, 50), window=8, stride=8)
    assert list(boxed.target_names[0]) == ["blue 1.00"]
    [top] = explain_detections(det, img, "builtin.Occlusion", targets=xb.top_k(1), window=8, stride=8)
    assert top.attributions.shape == (1, 1, 64, 64)


@pytest.mark.parametrize(
    ("targets", "kwargs", "match"),
    [
        ("green", {}, r"targets: the detector knows no class named 'green'"),
        ("backgrund", {}, r"did you mean 'background'"),
        (None, {"score_threshold": 1.5}, r"no detection of image 0 scored >= score_threshold=1.5 \(highest: 1.00"),
        ("background", {}, r"no 'background' detected in image 0"),
        (xb.Box(70, 70, 90, 90), {}, r"box \(70.0, 70.0, 90.0, 90.0\) has no pixel inside image 0 of 64x64"),
        (xb.Box(0, 40, 6, 60), {}, r"no detection of image 0 overlaps box"),
        ([None, None], {}, r"targets: got 2 entries for 1 images"),
    ],
)
def test_bad_targets_are_one_line(targets: object, kwargs: dict, match: str) -> None:
    det, _ = detector()
    with pytest.raises(xb.ParameterError, match=match) as info:
        explain_detections(det, scene(), "builtin.Occlusion", targets=targets, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_detector_output_is_one_line() -> None:
    bad = DetectionModel(lambda images: [{"boxes": np.zeros((1, 4))} for _ in images])
    with pytest.raises(xb.ModelInputError, match=r"fn\(images\)\[0\]: expected a dict with 'boxes'"):
        explain_detections(bad, scene())
    short = DetectionModel(lambda images: [])
    with pytest.raises(xb.ModelInputError, match=r"fn: returned 0 results for 1 images"):
        explain_detections(short, scene())


def test_drise_equals_the_papers_formula_on_the_same_masks() -> None:
    det, _ = detector()
    img = scene()
    [exp] = explain_detections(det, img, "builtin.DRISE", n_masks=64, grid=8, seed=3)
    masks = sample_masks(64, (64, 64), (8, 8), 0.5, seed=3).masks()
    masked = np.rint(masks[..., None] * img.astype(np.float32)).astype(np.uint8)  # baseline 0
    targets = det.detect(img[None])[0]
    found = det.detect(masked)
    weights = np.stack([similarity(targets, f) for f in found])  # (masks, T)
    expected = np.einsum("kt,khw->thw", weights, masks.astype(np.float64)) / 64
    np.testing.assert_allclose(exp.attributions[0], expected, rtol=1e-5, atol=1e-7)
    red, blue = exp.attributions[0]
    assert red[8:28, 8:28].mean() > red[30:54, 36:60].mean()  # each map finds its own square
    assert blue[30:54, 36:60].mean() > blue[8:28, 8:28].mean()


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("builtin.DRISE", {"n_masks": 40}),
        ("builtin.RISE", {"n_masks": 40}),
        ("shap.Partition", {"max_evals": 60, "masker": "blur(8,8)"}),
        ("builtin.Occlusion", {"window": 16, "stride": 16}),
    ],
)
def test_k_detections_cost_the_perturbations_of_one(method: str, params: dict) -> None:
    counts = []
    for k in (1, 2):
        det, fn = detector()
        explain_detections(det, scene(), method, targets=xb.top_k(k), **params)
        counts.append(fn.images)
    assert counts[0] == counts[1]


def test_torchvision_detector_runs_and_is_left_as_it_was() -> None:
    torch = pytest.importorskip("torch")
    detection = pytest.importorskip("torchvision.models.detection")
    torch.manual_seed(0)
    net = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=64
    )
    net.train()
    thresh = net.roi_heads.score_thresh
    det = TorchvisionDetector(net, class_names=NAMES, batch_size=8)
    [exp] = explain_detections(det, scene(), "builtin.DRISE", targets=xb.top_k(2), n_masks=8, grid=4)
    assert exp.attributions.shape == (1, 2, 64, 64) and np.isfinite(exp.attributions).all()
    assert net.training and net.roi_heads.score_thresh == thresh
    with pytest.raises(xb.ParameterError, match="module: expected a torchvision detection model"):
        TorchvisionDetector(torch.nn.Linear(2, 2))


def test_drise_refuses_a_classifier() -> None:
    model = xb.BlackBoxModel(lambda x: np.ones((len(x), 2)), class_names=["a", "b"])
    with pytest.raises(xb.MethodNotApplicableError, match="builtin.DRISE: explains detections of an object detector"):
        xb.explain(model, scene(), "builtin.DRISE", targets=0)


def test_score_model_scores_every_target_in_one_pass() -> None:
    det, fn = detector()
    img = scene()
    targets = det.detect(img[None])[0]
    model = DetectionScoreModel(det, targets, ["red", "blue"])
    before = fn.calls
    out = model.predict(np.stack([img, np.full_like(img, 120)]))
    assert fn.calls == before + 1
    np.testing.assert_allclose(out, [[1, 1], [0, 0]])


def test_semantic_regions_for_a_detector_its_boxes_as_regions() -> None:
    det, _ = detector()
    [exp] = explain_detections(det, scene(), "shap.Partition", max_evals=40, masker="blur(8,8)", partition="boxes")
    segments = exp.extras["segments"][0, 0]
    assert np.unique(segments).size == 3  # the two boxes and the rest of the image
    red = exp.attributions[0, 0]
    total = red.sum()
    assert red[8:28, 8:28].sum() == pytest.approx(total, rel=1e-5)  # only the red box moves the red detection


def test_a_torchvision_detector_batches_by_the_size_its_transform_resizes_to() -> None:
    """Perturbed images share passes on a small detector; a large one gets one image per pass."""
    from torchvision.models import detection

    small = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, min_size=128, max_size=128
    )
    large = detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)  # 800 x 1333
    assert TorchvisionDetector(small).batch_size == 16
    assert TorchvisionDetector(large).batch_size == 1
    assert TorchvisionDetector(large, batch_size=3).batch_size == 3
    with pytest.raises(xb.ParameterError, match="batch_size: expected an integer >= 1"):
        TorchvisionDetector(small, batch_size=0)


@pytest.mark.parametrize("bad", [0, "abc", 2.5, True])
def test_a_bad_batch_size_is_one_line_naming_it(bad: object) -> None:
    """The adapters share the project's integer check: no raw int() error for a string."""
    with pytest.raises(xb.ParameterError, match="batch_size: expected an integer >= 1"):
        DetectionModel(lambda images: [], batch_size=bad)  # type: ignore[arg-type]
