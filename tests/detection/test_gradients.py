"""The gradient and CAM path for detectors: parity with pytorch-grad-cam's detection recipe, no wrapper, cost, errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
detection = pytest.importorskip("torchvision.models.detection")
gc = pytest.importorskip("pytorch_grad_cam")
cv2 = pytest.importorskip("cv2")
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget  # noqa: E402
from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform  # noqa: E402
from tiny_detector import SquareDetector, SquareNet, square_image  # noqa: E402
from xai_bridge.adapters.models import hook_count  # noqa: E402
from xai_bridge.adapters.models.detector_gradients import box_scores  # noqa: E402
from xai_bridge.adapters.models.detectors import DetectionModel, TorchvisionDetector  # noqa: E402

import xai_bridge as xb  # noqa: E402


def calibrated(net: torch.nn.Module) -> torch.nn.Module:
    """Batch-norm statistics of one random batch: a randomly initialised detector whose features are not degenerate.

    benchmarks/bench_detection.py's ``detector`` holds the same lines (tests and
    benchmarks import neither the other, and users never need it): change both.
    """
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    net.backbone.train()
    with torch.no_grad():
        net.backbone(torch.rand(8, 3, 128, 128, generator=torch.Generator().manual_seed(0)))
    return net.eval()


@pytest.fixture(scope="module")
def frcnn() -> torch.nn.Module:
    torch.manual_seed(0)
    net = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128, box_score_thresh=0.001
    )
    return calibrated(net)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    img = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    img[20:60, 30:70] = 250
    return img


def pixels(img: np.ndarray) -> torch.Tensor:
    """The [0, 1] tensor xai-bridge hands the detector (uint8 * (1 / 255)), for the library called directly."""
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() * (1 / 255.0) + 0.0


def minmax(a: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's scale_cam_image without the resize."""
    a = a - a.min()
    return a / (1e-7 + a.max())


def library(
    cam_class: type,
    net: torch.nn.Module,
    layer: torch.nn.Module,
    x: torch.Tensor,
    label: int,
    box: np.ndarray,
    **kw: object,
) -> np.ndarray:
    cam = cam_class(net, [layer], **kw)
    try:
        return np.asarray(cam(x, targets=[FasterRCNNBoxScoreTarget([label], box[None].astype(np.float32))])[0])
    finally:
        cam.activations_and_grads.release()


@pytest.mark.slow
def test_eigencam_equals_the_tutorial_recipe(frcnn, image) -> None:
    """pytorch-grad-cam's Faster R-CNN tutorial: EigenCAM on model.backbone with fasterrcnn_reshape_transform."""
    [exp] = xb.explain(frcnn, image, "gradcam.EigenCAM", targets=xb.top_k(2))
    assert exp.params["layer"] == "backbone" and exp.attributions.shape == (1, 2, 96, 96)
    for j in range(2):
        lib = library(
            gc.EigenCAM,
            frcnn,
            frcnn.backbone,
            pixels(image),
            int(exp.targets[0, j]),
            exp.extras["boxes"][0, j],
            reshape_transform=fasterrcnn_reshape_transform,
        )
        np.testing.assert_allclose(minmax(exp.attributions[0, j]), lib, atol=1e-5)


@pytest.mark.slow
def test_gradcam_on_the_backbone_by_hand(frcnn, image) -> None:
    """Grad-CAM on the backbone's dict of maps (which pytorch-grad-cam cannot hook): its formula, by hand."""
    [exp] = xb.explain(frcnn, image, "gradcam.GradCAM", targets=xb.top_k(2))
    assert exp.params["layer"] == "backbone"
    seen: dict[str, object] = {}
    handle = frcnn.backbone.register_forward_hook(lambda m, i, o: seen.__setitem__("maps", o))
    try:
        found = frcnn(pixels(image))[0]
    finally:
        handle.remove()
    maps = seen["maps"]
    for j in range(2):
        box, label = torch.tensor(exp.extras["boxes"][0, j : j + 1]), torch.tensor([int(exp.targets[0, j])])
        score = box_scores(found, box, label, 0.5)[0]
        grads = torch.autograd.grad(score, list(maps.values()), retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(m) if g is None else g for m, g in zip(maps.values(), grads, strict=True)]
        acts = fasterrcnn_reshape_transform(maps).detach().numpy()
        g = fasterrcnn_reshape_transform(dict(zip(maps, grads, strict=True))).numpy()
        low = np.maximum((g.mean(axis=(2, 3))[:, :, None, None] * acts).sum(axis=1), 0)[0]
        expected = cv2.resize(np.float32(low), (96, 96))
        np.testing.assert_allclose(
            exp.attributions[0, j], expected, rtol=1e-4, atol=1e-6 * float(np.abs(expected).max())
        )
    frcnn.zero_grad(set_to_none=True)


@pytest.mark.slow
def test_gradcam_on_a_tensor_layer_equals_the_library(frcnn, image) -> None:
    [exp] = xb.explain(frcnn, image, "gradcam.GradCAM", targets=xb.top_k(2), layer="backbone.body.12")
    for j in range(2):
        lib = library(
            gc.GradCAM,
            frcnn,
            frcnn.backbone.body.get_submodule("12"),
            pixels(image),
            int(exp.targets[0, j]),
            exp.extras["boxes"][0, j],
        )
        np.testing.assert_allclose(minmax(exp.attributions[0, j]), lib, atol=1e-5)
    frcnn.zero_grad(set_to_none=True)


def test_box_score_is_the_librarys_target(frcnn, image) -> None:
    x = pixels(image)
    found = frcnn(x)[0]
    boxes, labels = found["boxes"][:3].detach(), found["labels"][:3]
    ours = box_scores(found, boxes, labels, 0.5)
    for j in range(3):
        theirs = FasterRCNNBoxScoreTarget(labels[j : j + 1].numpy(), boxes[j : j + 1].numpy())(found)
        assert float(ours[j]) == pytest.approx(float(theirs[0]), rel=1e-6)
    far = box_scores(found, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), labels[:1], 0.5)
    assert float(far[0]) == 0.0


@pytest.mark.slow
def test_the_users_detector_is_left_as_it_was(image) -> None:
    torch.manual_seed(1)
    net = calibrated(
        detection.fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128, box_score_thresh=0.001
        )
    )
    net.train()
    net.backbone.body.get_submodule("0").requires_grad_(False)
    before = (
        net.roi_heads.score_thresh,
        net.transform.min_size,
        hook_count(net),
        [p.requires_grad for p in net.parameters()],
    )
    for method in ("gradcam.GradCAM", "captum.Saliency"):
        xb.explain(net, image, method, targets=xb.top_k(1))
    assert net.training and all(m.training for m in net.modules())
    assert before == (
        net.roi_heads.score_thresh,
        net.transform.min_size,
        hook_count(net),
        [p.requires_grad for p in net.parameters()],
    )
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.slow
def test_no_wrapper_for_ssdlite_with_its_weights_categories(image) -> None:
    weights = detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1
    torch.manual_seed(0)
    net = calibrated(detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, score_thresh=0.001))
    [exp] = xb.explain(net, image, "gradcam.GradCAM", targets=xb.top_k(1), preprocess=weights)
    assert exp.params["layer"] == "backbone" and exp.attributions.shape == (1, 1, 96, 96)
    assert exp.target_names[0, 0].rsplit(" ", 1)[0] in weights.meta["categories"]
    assert np.isfinite(exp.attributions).all()


@pytest.mark.slow
def test_explain_many_routes_a_detector(frcnn, image) -> None:
    many = xb.explain_many(
        frcnn, image, ["captum.Saliency", ("builtin.DRISE", {"n_masks": 4, "grid": 4})], targets=xb.top_k(1)
    )
    assert list(many) == ["captum.Saliency", "builtin.DRISE"]
    for [exp] in many.values():
        assert exp.attributions.shape[:2] == (1, 1)
    assert many["captum.Saliency"].__class__ is list


def test_one_backward_per_target_for_gradient_methods() -> None:
    det = SquareDetector(SquareNet().eval(), score_floor=0.0)
    img = square_image(np.random.default_rng(0), 8, 8)
    xb.explain(det, img, "gradcam.GradCAM", targets=xb.top_k(1))  # structure found once (the layer's output)
    counts = []
    for k in (1, 5):
        det.torch_calls = 0
        [exp] = xb.explain(det, img, "gradcam.GradCAM", targets=xb.top_k(k))
        assert exp.attributions.shape[1] == k
        counts.append(det.torch_calls)
    assert counts[1] - counts[0] == 4  # one forward and backward per target, the rest shared (layer, targets)


@pytest.mark.parametrize(
    "method", ["builtin.DRISE", "builtin.RISE", pytest.param("shap.Partition", marks=pytest.mark.slow)]
)
def test_k_detections_cost_one_images_perturbations(method: str) -> None:
    det = SquareDetector(SquareNet().eval(), score_floor=0.0)
    img = square_image(np.random.default_rng(0), 8, 8)
    counts = []
    for k in (1, 5):
        det.images = 0
        xb.explain(det, img, method, targets=xb.top_k(k), budget=40)
        counts.append(det.images)
    assert counts[0] == counts[1]


@pytest.mark.slow
def test_bad_input_is_one_line(frcnn, image) -> None:
    cases = [
        (
            xb.ParameterError,
            dict(targets=xb.Box(200, 200, 240, 240)),
            r"targets: box .* has no pixel inside image 0 of 96x96",
        ),
        (
            xb.ParameterError,
            dict(targets="zebra", preprocess=None),
            r"targets: .*no class named 'zebra'|has no class names",
        ),
        (
            xb.ParameterError,
            dict(targets=None, score_threshold=1.0),
            r"no detection of image 0 scored >= score_threshold=1 \(highest: \d\.\d\d .*lower score_threshold=",
        ),
    ]
    for error, kwargs, match in cases:
        with pytest.raises(error, match=match) as info:
            xb.explain(frcnn, image, "gradcam.GradCAM", **kwargs)
        assert "\n" not in str(info.value)
    weights = detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1
    with pytest.raises(
        xb.ParameterError, match=r"targets: the detector knows no class named 'zebar'; did you mean 'zebra'"
    ):
        xb.explain(frcnn, image, "gradcam.GradCAM", targets="zebar", weights=weights)
    with pytest.raises(
        xb.MethodNotApplicableError, match=r"method: .* explains a transformer classifier, not an object detector"
    ):
        xb.explain(frcnn, image, "builtin.AttentionRollout")
    black_box = DetectionModel(lambda images: [{"boxes": np.zeros((0, 4)), "labels": [], "scores": []} for _ in images])
    with pytest.raises(
        xb.MethodNotApplicableError,
        match=r"gradcam.GradCAM needs gradients, but DetectionModel is a black-box detector",
    ):
        xb.explain(black_box, image, "gradcam.GradCAM")
    with pytest.raises(xb.ParameterError, match=r"iou_threshold: only gradient and CAM methods take it"):
        xb.explain(frcnn, image, "builtin.DRISE", iou_threshold=0.3)
    assert isinstance(TorchvisionDetector(frcnn), xb.detection.GradientDetector)


@pytest.fixture(scope="module")
def trained() -> SquareDetector:
    from tiny_detector import train_square_net

    return SquareDetector(train_square_net())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "params", "centred"),
    [
        ("gradcam.GradCAM", {}, False),
        ("captum.IntegratedGradients", {"n_steps": 16}, False),
        ("builtin.DRISE", {"n_masks": 100, "grid": 6}, True),
    ],
)
def test_localisation_on_a_trained_detector(trained, method: str, params: dict, centred: bool) -> None:
    """Known ground truth: most positive mass inside the detected square's box (D-RISE: above its mean)."""
    img = square_image(np.random.default_rng(5), 10, 24)
    [exp] = xb.explain(trained, img, method, targets=xb.top_k(1), **params)
    x0, y0, x1, y1 = (int(v) for v in exp.extras["boxes"][0, 0])
    assert abs(x0 - 24) <= 4 and abs(y0 - 10) <= 4  # the detector found the square
    amap = exp.attributions[0, 0]
    positive = np.maximum(amap - amap.mean() if centred else amap, 0)
    assert positive[y0:y1, x0:x1].sum() / positive.sum() > 0.5
