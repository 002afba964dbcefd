"""Ultralytics YOLO (v8, v11; detect and segment) as a detector, and Eigen-CAM on it.

An optional extra (``pip install "xai-bridge[yolo]"``): ultralytics is
AGPL-3.0, so xai-bridge never requires it. :class:`YOLODetector` detects
through ``model.predict`` (boxes ``xyxy``, ``cls``, ``conf`` in the image's
pixels) with the class names of ``model.names``; ultralytics is kept offline
(``YOLO_OFFLINE=1`` unless set otherwise) and nothing is downloaded.

YOLO's ``predict`` runs without gradients, so gradient methods are refused
(one line, before running, naming Eigen-CAM); every perturbation method
explains its detections (a segmentation model's masks become the
explanations' ``extras["regions"]``), and Eigen-CAM runs as pytorch-grad-cam's
YOLO tutorial does (the first principal component of the layer before the
detection head, class-agnostic: no gradients needed), by name through
``xb.explain(yolo, images, "gradcam.EigenCAM")`` or :meth:`YOLODetector.eigencam`.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from xai_bridge._validate import int_at_least
from xai_bridge.detection import Detections
from xai_bridge.errors import LibraryNotInstalledError, ModelInputError, ParameterError
from xai_bridge.explanation import Explanation

__all__ = ["YOLODetector", "is_yolo"]

_INSTALL = 'pip install "xai-bridge[yolo]"'
_TASKS = ("detect", "segment", "pose")


def is_yolo(obj: Any) -> bool:
    """Whether ``obj`` is an Ultralytics model (its ``YOLO`` wrapper), checked without importing ultralytics."""
    return any(c.__module__.startswith("ultralytics.") for c in type(obj).__mro__) and hasattr(obj, "predict")


def _ultralytics() -> Any:
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks, no analytics: nothing leaves the machine
    try:
        import ultralytics
    except ImportError:
        raise LibraryNotInstalledError(f"YOLODetector: needs ultralytics (AGPL-3.0): {_INSTALL}") from None
    return ultralytics


def _masks(masks: Any, count: int, size: tuple[int, ...]) -> np.ndarray:
    """Bool ``(K, H, W)``: a YOLO-seg result's masks at the image's size (none when nothing was found)."""
    if masks is None or count == 0:
        return np.zeros((count, *size), bool)
    return np.asarray(masks.data.detach().cpu().numpy() >= 0.5)


class YOLODetector:
    """An Ultralytics YOLO detection or segmentation model, as a detector.

    Example::

        detector = xb.YOLODetector(YOLO("yolo11n.pt"))  # your weights, already on disk
        [drise] = xb.explain_detections(detector, "street.jpg", "builtin.DRISE", targets="person")
        [eigen] = detector.eigencam("street.jpg")  # one class-agnostic map, every detection's box

    Args:
        model: an ``ultralytics.YOLO`` model, or the path of a local ``.pt``
            weights file or ``.yaml`` model config (a config builds random weights).
        imgsz: the input size ``predict`` letterboxes to (and Eigen-CAM resizes to).
        conf: the lowest score ``detect`` returns (weak detections still count,
            weakly, when a perturbed image is compared with its target).
        iou: the IoU of ``predict``'s non-maximum suppression.
        class_names: names per class index (default: ``model.names``).
        batch_size: images per ``predict`` call.

    Attributes:
        own_methods: the methods this detector runs itself, without gradients
            (``explain_detections`` hands them to :meth:`explain_own`).
    """

    own_methods: tuple[str, ...] = ("gradcam.EigenCAM",)

    def __init__(
        self,
        model: Any,
        *,
        imgsz: int = 640,
        conf: float = 0.01,
        iou: float = 0.7,
        class_names: Sequence[str] | None = None,
        batch_size: int = 8,
    ) -> None:
        ultralytics = _ultralytics()
        if isinstance(model, (str, Path)):
            model = _load(ultralytics, str(model))
        if not is_yolo(model) or not hasattr(model, "model"):
            raise ModelInputError(
                f"model: expected an ultralytics YOLO model (e.g. YOLO('yolo11n.pt')), got {type(model).__name__}"
            )
        if getattr(model, "task", None) not in _TASKS:
            raise ModelInputError(
                f"model: a YOLO {getattr(model, 'task', None)} model has no boxes to explain; "
                f"expected one of the tasks {list(_TASKS)}"
            )
        batch_size = int_at_least("batch_size", batch_size, 1)
        self.yolo = model
        self.module = model.model
        # predict caches its predictor (a fused copy of the network) on the wrapper: ours, never the user's
        self._runner = copy.copy(model)
        self._runner.predictor = None
        names = model.names
        self.class_names: Sequence[str] | None = (
            [str(n) for n in class_names] if class_names is not None else [str(names[i]) for i in sorted(names)]
        )
        self.imgsz, self.conf, self.iou, self.batch_size = int(imgsz), float(conf), float(iou), int(batch_size)

    def detect(self, images: np.ndarray) -> list[Detections]:
        """One :class:`Detections` per uint8 ``(N, H, W, 3)`` RGB image, through ``model.predict`` (no masks)."""
        return self._predict(images, masks=False)

    def detect_masks(self, images: np.ndarray) -> list[Detections]:
        """:meth:`detect` with each detection's mask at the image's size, for a segmentation model.

        Called once per explained image (the detections to explain), not on
        the perturbed images: ``retina_masks`` masks of every weak detection
        would cost far more than the boxes.
        """
        return self._predict(images, masks=self.yolo.task == "segment")

    def _predict(self, images: np.ndarray, masks: bool) -> list[Detections]:
        from xai_bridge.adapters._torch import model_guard

        out: list[Detections] = []
        with model_guard(self.module):
            for start in range(0, len(images), self.batch_size):
                batch = [np.ascontiguousarray(img[..., ::-1]) for img in images[start : start + self.batch_size]]
                results = self._runner.predict(
                    batch,
                    imgsz=self.imgsz,
                    conf=self.conf,
                    iou=self.iou,
                    verbose=False,
                    save=False,
                    retina_masks=masks,
                )
                for r, img in zip(results, batch, strict=True):  # predict reads numpy arrays as BGR: flipped above
                    boxes = r.boxes
                    found = {"boxes": boxes.xyxy, "labels": boxes.cls, "scores": boxes.conf}
                    if masks:
                        found["masks"] = _masks(r.masks, len(boxes), img.shape[:2])
                    out.append(Detections.parse(found))
        return out

    def explain_own(
        self,
        method: str,
        images: Any,
        targets: Any = None,
        *,
        score_threshold: float = 0.5,
        layout: Any = None,
        budget: int | None = None,
        iou_threshold: float | None = None,
        seed: int = 0,
        **params: Any,
    ) -> list[Explanation]:
        """``method`` (one of :attr:`own_methods`) by name, as ``xb.explain`` routes it: :meth:`eigencam`.

        ``layer`` (or pytorch-grad-cam's ``target_layers=[layer]``) is the one
        parameter; ``seed`` is accepted and unused (Eigen-CAM draws nothing).
        """
        from xai_bridge.adapters.methods._layer_run import layer_aliases

        from xai_bridge.contract import check_params
        from xai_bridge.images import load_images

        if method not in self.own_methods:
            raise ParameterError(f"method: expected one of {list(self.own_methods)}, got {method!r}")
        why = {"budget": "makes one forward pass, with no budget to spend", "iou_threshold": "matches no boxes"}
        for name, value in (("budget", budget), ("iou_threshold", iou_threshold)):
            if value is not None:
                raise ParameterError(f"{name}: {method} on a YOLO detector {why[name]}; drop {name}=")
        kept = check_params(method, layer_aliases(params), {"layer": -2})
        rows = load_images(images, layout=layout)
        return self.eigencam(rows, targets, score_threshold=score_threshold, layer=kept["layer"])

    def eigencam(
        self,
        images: Any,
        targets: Any = None,
        *,
        score_threshold: float = 0.5,
        layer: int | Any = -2,
    ) -> list[Explanation]:
        """Eigen-CAM (Muhammad & Yeasin 2020, https://arxiv.org/abs/2008.00299) per image, as pytorch-grad-cam's YOLO tutorial.

        The image is resized to ``imgsz x imgsz`` pixels in ``[0, 1]`` and run
        through the network; the map is the first principal component of
        ``layer``'s activations, with the library's ReLU and resize to the
        image (raw: not min-max scaled). Eigen-CAM is class-agnostic, so each
        detection chosen by ``targets`` gets the same map; its box is in
        ``extras["boxes"]``.

        Args:
            images: anything :func:`~xai_bridge.load_images` reads.
            targets: as in :func:`~xai_bridge.explain_detections`.
            score_threshold: the lowest score of a detection explained by default.
            layer: the layer hooked: an index into the network's layers (default
                -2, the one before the detection head, as the tutorial), a
                module, or its dotted name in the network (``"model.21"``).

        Returns:
            One Explanation per image, one target per chosen detection.
        """
        from xai_bridge.detection.targets import per_image
        from xai_bridge.images import load_images

        rows = load_images(images)
        specs = per_image(targets, len(rows))
        return [
            self._eigencam_one(image, spec, score_threshold, layer, i)
            for i, (image, spec) in enumerate(zip(rows, specs, strict=True))
        ]

    def _eigencam_one(self, image: np.ndarray, spec: Any, score_threshold: float, layer: Any, i: int) -> Explanation:
        from xai_bridge.detection.targets import describe, select

        found = self.detect(image[None])[0]
        size = image.shape[:2]
        chosen = found.take(
            select(found, spec, score_threshold=score_threshold, class_names=self.class_names, size=size, image=i)
        )
        start = time.perf_counter()
        raw = self.eigencam_map(image, layer)
        return Explanation(
            attributions=np.repeat(raw[None, None], len(chosen), axis=1),
            method="gradcam.EigenCAM",
            library="gradcam",
            library_version=version("grad-cam"),
            n_model_evals=1,
            seconds=time.perf_counter() - start,
            targets=chosen.labels[None].astype(np.int64),
            target_names=np.asarray([describe(chosen, self.class_names)]),
            scores=chosen.scores[None].astype(np.float32),
            images=image[None],
            params={
                "layer": str(layer),
                "imgsz": self.imgsz,
                "score_threshold": score_threshold,
                "detector": "YOLODetector",
            },
            extras={"boxes": chosen.boxes[None].astype(np.float32)},
        )

    def eigencam_map(self, image: np.ndarray, layer: int | Any = -2) -> np.ndarray:
        """The raw Eigen-CAM ``(H, W)`` of one uint8 ``(H, W, 3)`` image (see :meth:`eigencam`)."""
        import torch
        import torch.nn.functional as F
        from pytorch_grad_cam import EigenCAM
        from xai_bridge.adapters._torch import model_guard
        from xai_bridge.adapters.methods.gradcam._runner import raw_class, upsample

        target = self._layer(layer)
        device = next((p.device for p in self.module.parameters()), torch.device("cpu"))
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div(255).to(device)
        x = F.interpolate(x, size=(self.imgsz, self.imgsz), mode="bilinear", align_corners=False)
        with model_guard(self.module, freeze_params=True):
            cam = raw_class(EigenCAM)(self.module, [target])
            try:
                cam.raw_cams = []
                cam(x, targets=[_unused] * len(x))  # Eigen-CAM reads no target; the library needs a list
            finally:
                cam.activations_and_grads.release()
        return upsample(cam.raw_cams[0], tuple(image.shape[:2]))[0]

    def _layer(self, layer: int | str | Any) -> Any:
        """The hooked module: an index into the network's layers, a dotted name in it, or a module of it."""
        try:
            if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
                return self.module.model[int(layer)]
            if isinstance(layer, str):
                return self.module.get_submodule(layer)
        except (IndexError, AttributeError):
            raise ParameterError(
                f"layer: {layer!r} is not a layer of the network ({len(self.module.model)} layers); "
                "pass an index such as -2 or a dotted name such as 'model.21'"
            ) from None
        if not any(m is layer for m in self.module.modules()):
            raise ParameterError(
                f"layer: expected an index, a dotted name or a module of the YOLO network, got {type(layer).__name__}"
            )
        return layer

    def __repr__(self) -> str:
        return f"YOLODetector({type(self.module).__name__}, task={self.yolo.task!r}, {len(self.class_names or ())} classes)"


def _unused(output: Any) -> Any:
    return output


def _load(ultralytics: Any, name: str) -> Any:
    """A YOLO from a local weights file or a model config: never a download."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return ultralytics.YOLO(name)
    raise ModelInputError(
        f"model: no file at {name!r}; pass a local .pt weights file or a .yaml config, or YOLO(...) "
        "(xai-bridge downloads nothing)"
    )
