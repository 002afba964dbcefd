"""Explain an object detector: one map per detection, through any perturbation method."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import numpy as np

from xai_bridge.errors import MethodNotApplicableError, ModelInputError, ParameterError
from xai_bridge.explanation import Explanation
from xai_bridge.images import Layout, load_images
from xai_bridge.progress import ProgressArg, session, set_prefix
from xai_bridge.registry import MethodSpec, Registry, default_registry

from .detections import Detections, Detector, GradientDetector
from .score_model import DetectionScoreModel
from .targets import describe, per_image, select

__all__ = ["as_detector", "check_method", "explain_detections", "is_detector"]


def is_detector(model: Any) -> bool:
    """Whether ``model`` is an object detector xai-bridge explains per detection (checked without importing torch).

    A :class:`Detector` adapter (``xb.DetectionModel``, ``TorchvisionDetector``,
    any object with ``detect``, ``class_names`` and ``batch_size``) or one of
    torchvision's detection models.
    """
    from xai_bridge.adapters.models.detector_kinds import is_known_detector
    from xai_bridge.adapters.models.detectors import is_torchvision_detector

    return isinstance(model, Detector) or is_torchvision_detector(model) or is_known_detector(model)


def as_detector(model: Any, preprocess: Any = None, weights: Any = None) -> Detector:
    """``model`` as a :class:`Detector`: adapters as they are, a torchvision detection model wrapped.

    Args:
        model: a detector adapter, a torchvision detection model, a Hugging Face
            ``...ForObjectDetection`` model or an Ultralytics YOLO model.
        preprocess: for a torchvision model, its weights enum (its ``meta["categories"]``
            name the labels); the model's own transform does the preprocessing.
        weights: the same as ``preprocess`` (either spelling).
    """
    from xai_bridge.adapters.models.detector_kinds import wrap_detector
    from xai_bridge.adapters.models.detectors import TorchvisionDetector, is_torchvision_detector

    if preprocess is not None and weights is not None:
        raise ParameterError("weights: an alias of preprocess= for a detector, but both were given; pass only one")
    given = weights if weights is not None else preprocess
    if isinstance(model, Detector):
        if given is not None:
            raise ParameterError(
                f"preprocess: {type(model).__name__} is a detector adapter with its own class names; drop preprocess="
            )
        return model
    if is_torchvision_detector(model):
        if given is not None and not isinstance(getattr(given, "meta", None), dict):
            raise ParameterError(
                f"preprocess: expected the detector's torchvision weights enum (for its categories), "
                f"got {type(given).__name__}; e.g. preprocess=FasterRCNN_ResNet50_FPN_Weights.DEFAULT"
            )
        return TorchvisionDetector(model, weights=given)  # type: ignore[return-value]
    wrapped = wrap_detector(model)  # Hugging Face and YOLO detectors, their processor and names their own
    if wrapped is not None:
        if given is not None:
            raise ParameterError(
                f"preprocess: {type(model).__name__} brings its own processor and class names; drop preprocess="
            )
        return wrapped
    raise ModelInputError(
        f"model: expected an object detector, got {type(model).__name__}; wrap a function returning boxes with "
        "xb.DetectionModel(fn, class_names)"
    )


def check_method(spec: MethodSpec, detector: Detector) -> None:
    """Refuse, in one line and before any detection, a method that cannot explain ``detector``'s detections.

    Perturbation methods explain any detector; gradient and CAM methods a
    :class:`GradientDetector` (its scores differentiable in the pixels);
    methods made for one kind of network (attention of a vision transformer)
    none; methods with targets of their own (Deep Feature Factorization's
    concepts) none either. A method the detector runs itself (its
    ``own_methods``: YOLO's Eigen-CAM) is its own to check.
    """
    own = tuple(getattr(detector, "own_methods", ()))
    if spec.name in own:
        return
    if spec.own_targets:
        raise MethodNotApplicableError(
            f"method: {spec.name} gives maps of targets of its own, not one map per detection; use a CAM "
            "(gradcam.GradCAM, gradcam.EigenCAM), a captum gradient method or a perturbation method (builtin.DRISE)"
        )
    if spec.model_kind not in ("any", "detector"):
        raise MethodNotApplicableError(
            f"method: {spec.name} explains a {spec.model_kind} classifier, not an object detector's detections; "
            "use a CAM, a captum gradient method or a perturbation method (builtin.DRISE, shap.Partition)"
        )
    if spec.needs_gradients and not isinstance(detector, GradientDetector):
        instead = f"{' or '.join(own)} (no gradients) or " if own else ""
        raise MethodNotApplicableError(
            f"method: {spec.name} needs gradients, but {type(detector).__name__} is a black-box detector; use "
            f"{instead}a perturbation method (builtin.DRISE, builtin.RISE, shap.Partition, lime.Lime, "
            "builtin.Occlusion)"
        )


def explain_detections(
    detector: Detector,
    images: Any,
    method: str = "builtin.DRISE",
    /,
    targets: Any = None,
    *,
    score_threshold: float = 0.5,
    iou_threshold: float | None = None,
    budget: int | None = None,
    seed: int = 0,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    progress: ProgressArg = "auto",
    **params: Any,
) -> list[Explanation]:
    """Explain each image's detections, one target per detection.

    For every image: detect, pick the target detections (see
    :mod:`xai_bridge.detection.targets`), wrap detector and targets in a
    model with one output per target and run :func:`xai_bridge.explain` with
    ``method``. Perturbation methods score a perturbed image by the D-RISE
    similarity (:class:`DetectionScoreModel`); gradient and CAM methods, on a
    :class:`GradientDetector`, differentiate pytorch-grad-cam's
    ``FasterRCNNBoxScoreTarget`` score (the matched box's IoU plus its score).
    Each image has its own detections, so each gets its own
    :class:`~xai_bridge.Explanation` (``N == 1``).

    Args:
        detector: a detector adapter (:class:`~xai_bridge.adapters.models.detectors.DetectionModel`,
            a torchvision detector wrapped by ``as_detector``).
        images: anything :func:`~xai_bridge.load_images` reads.
        method: a perturbation method: ``"builtin.DRISE"`` (default), ``"builtin.RISE"``,
            ``"builtin.Occlusion"``, ``"shap.Partition"``, ``"lime.Lime"``...; or, for a
            :class:`GradientDetector`, a gradient or CAM method (``"gradcam.GradCAM"``,
            ``"captum.IntegratedGradients"``...; CAMs hook the detector's ``cam_layer``
            by default, torchvision's ``backbone``, or ``layer=``).
        targets: None (every detection above ``score_threshold``), ``xb.top_k(k)``,
            a class name or index, ``xb.Box(x0, y0, x1, y1)``, or one of those per image.
        score_threshold: the lowest score of a detection explained by default.
        iou_threshold: gradient and CAM methods: the IoU above which a detection of the
            (perturbed) image matches its target (default 0.5, as pytorch-grad-cam).
        budget: model evaluations per image, as in :func:`xai_bridge.explain`.
        seed: random seed.
        layout: layout of array inputs when ambiguous.
        registry: method table (default: the built-in one).
        progress: as in :func:`xai_bridge.explain`.
        **params: the method's own parameters. ``shap.Partition`` also takes
            ``partition="boxes"``: the image's detections above
            ``score_threshold`` as its regions, each box one region.

    Returns:
        One Explanation per image: ``targets`` are the detections' class indices,
        ``target_names`` ``"dog 0.93"``, ``scores`` the detections' scores, and
        ``extras["boxes"]`` float ``(1, T, 4)`` their boxes ``(x0, y0, x1, y1)``; for a
        detector with a mask head (Mask R-CNN, YOLO-seg) ``extras["regions"]`` bool
        ``(1, T, H, W)`` their masks, the layout a segmentation model's regions have;
        for one with a keypoint head (Keypoint R-CNN) ``extras["keypoints"]`` float
        ``(1, T, J, 3)`` their keypoints ``(x, y, visibility)`` in the image's pixels
        and ``extras["keypoints_scores"]`` ``(1, T, J)``.
    """
    registry = registry or default_registry()
    spec = registry.spec(method)
    check_method(spec, detector)
    if spec.name in getattr(detector, "own_methods", ()):  # run by the detector itself (YOLO's Eigen-CAM)
        kw = {"score_threshold": score_threshold, "layout": layout, "budget": budget, "iou_threshold": iou_threshold}
        ran: list[Explanation] = cast(Any, detector).explain_own(spec.name, images, targets, seed=seed, **kw, **params)
        return ran
    if iou_threshold is not None and not spec.needs_gradients:
        raise ParameterError(
            f"iou_threshold: only gradient and CAM methods take it, {spec.name} scores detections by their "
            "D-RISE similarity; drop iou_threshold="
        )
    if budget is not None:
        params["budget"] = budget
    if spec.needs_gradients:
        params["iou_threshold"] = 0.5 if iou_threshold is None else float(iou_threshold)
    rows = load_images(images, layout=layout)
    specs = per_image(targets, len(rows))
    results = []
    with session(progress, f"detections {method}"):
        for i, image in enumerate(rows):
            if len(rows) > 1:
                set_prefix(f"image {i + 1}/{len(rows)} ")
            found, chosen = _targets_of(detector, image, specs[i], score_threshold, i)
            run_params = dict(params)
            if isinstance(run_params.get("partition"), str) and run_params["partition"] == "boxes":  # boxes as regions
                run_params["partition"] = found.take(found.scores >= score_threshold)
            results.append(_explain_image(detector, image, chosen, method, score_threshold, seed, registry, run_params))
    return results


def _targets_of(
    detector: Detector, image: np.ndarray, spec: Any, score_threshold: float, i: int
) -> tuple[Detections, Detections]:
    """Detect on the unperturbed image: everything found, and the detections ``spec`` names (never none).

    A detector whose masks or keypoints cost more than its boxes (YOLO-seg,
    torchvision's Mask and Keypoint R-CNN) gives them through ``detect_masks``,
    asked here only: the perturbed images need boxes.
    """
    found = getattr(detector, "detect_masks", detector.detect)(image[None])[0]
    names = getattr(detector, "class_names", None)
    index = select(found, spec, score_threshold=score_threshold, class_names=names, size=image.shape[:2], image=i)
    return found, found.take(index)


def _explain_image(
    detector: Detector,
    image: np.ndarray,
    chosen: Detections,
    method: str,
    score_threshold: float,
    seed: int,
    registry: Registry,
    params: dict[str, Any],
) -> Explanation:
    """One image's detections through ``method``, with their boxes, labels and scores on the result."""
    from xai_bridge.routing import explain

    names = describe(chosen, getattr(detector, "class_names", None))
    model: Any
    if "iou_threshold" in params:  # a gradient or CAM method (see explain_detections)
        from xai_bridge.adapters.models.detector_gradients import DetectionGradientModel

        model = DetectionGradientModel(detector, chosen, names, params.pop("iou_threshold"))  # type: ignore[arg-type]
    else:
        model = DetectionScoreModel(detector, chosen, names)
    exp = explain(
        model, image[None], method, targets=[list(range(len(chosen)))], seed=seed, registry=registry, **params
    )
    extras = {**dict(exp.extras), "boxes": chosen.boxes[None].astype(np.float32)}
    if chosen.masks is not None:  # a mask head: each detection's mask, outlined as a segmenter's regions are
        if chosen.masks.shape[1:] != image.shape[:2]:
            raise ModelInputError(
                f"detector: returned masks of {chosen.masks.shape[1:]} pixels for an image of {image.shape[:2]}; "
                "return each detection's mask at the size of the image it was given"
            )
        extras["regions"] = chosen.masks[None]
    if chosen.keypoints is not None:  # a keypoint head: each detection's keypoints, drawn with its box
        extras["keypoints"] = chosen.keypoints[None].astype(np.float32)
        if chosen.keypoints_scores is not None:
            extras["keypoints_scores"] = chosen.keypoints_scores[None].astype(np.float32)
    return replace(
        exp,
        targets=chosen.labels[None].astype(np.int64),
        scores=chosen.scores[None].astype(np.float32),
        extras=extras,
        params={**dict(exp.params), "score_threshold": score_threshold, "detector": type(detector).__name__},
    )
