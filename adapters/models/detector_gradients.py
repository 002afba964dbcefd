"""The gradient and CAM path for detectors: a differentiable score per target detection.

A :class:`~xai_bridge.detection.GradientDetector` and the detections to
explain become an ordinary :class:`~xai_bridge.adapters.models.TorchModel`
whose outputs are ``(N, T)``: one column per target, pytorch-grad-cam's
``FasterRCNNBoxScoreTarget`` score (see :func:`box_scores`). Every gradient
method (captum's, every CAM of pytorch-grad-cam and torchcam) then explains
each detection as it explains a class, one backward pass per target.

A CAM layer whose output is a dict of feature maps (a torchvision detector's
``backbone``, an FPN) is hooked through a packed copy of that dict: the
libraries only hook tensors, and pytorch-grad-cam's own Faster R-CNN recipe
(``target_layers=[model.backbone]``) records no gradient there. The packed
tensor's ``reshape_transform`` is pytorch-grad-cam's ``fasterrcnn_reshape_transform``
(every level's absolute value resized to the coarsest level, concatenated).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xai_bridge.detection import Detections, GradientDetector
from xai_bridge.errors import ModelInputError
from xai_bridge.models import OutputKind
from xai_bridge.preprocess import Preprocess, Scale

from .torch import TorchModel

__all__ = ["BoxScoreModule", "DetectionGradientModel", "LevelMerge", "box_scores"]


def box_scores(
    found: Mapping[str, torch.Tensor], boxes: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """``(T,)``: each target's score in one image's differentiable detections ``found``.

    pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` for one target box: the
    detection of ``found`` overlapping the target most (IoU); when that IoU
    exceeds ``iou_threshold`` and its label is the target's, its IoU plus its
    score, else 0. Differentiable in ``found["scores"]`` and ``found["boxes"]``.
    """
    scores = found["scores"]
    if len(found["boxes"]) == 0:
        return scores.sum() * 0 + scores.new_zeros(len(boxes))  # zeros that keep the graph
    out = found["boxes"]
    boxes = boxes.to(device=out.device, dtype=out.dtype)
    iou = _box_iou(boxes, out)  # (T, K)
    index = iou.argmax(dim=1)
    best = iou.gather(1, index[:, None])[:, 0]
    hit = (best > iou_threshold) & (found["labels"][index].to(labels.device) == labels).to(out.device)
    return torch.where(hit, best + scores[index], torch.zeros_like(best))


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU ``(len(a), len(b))`` of ``(x0, y0, x1, y1)`` boxes, as ``torchvision.ops.box_iou`` computes it.

    Two empty boxes (zero width or height: FCOS and RetinaNet with random
    weights find them) have IoU 0 here, not torchvision's 0/0 = NaN, whose
    gradient would turn every pixel's NaN even where the pair is not chosen.
    """
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    empty = union <= 0
    return torch.where(empty, torch.zeros_like(inter), inter / torch.where(empty, torch.ones_like(union), union))


class _Packer(nn.Module):
    """The identity on a packed dict of feature maps: the tensor CAM libraries hook instead of the dict."""

    def __init__(self) -> None:
        super().__init__()
        self.layout: list[tuple[str, tuple[int, ...]]] = []

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return flat

    def unpack(self, flat: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The dict of maps a packed ``(N, D)`` tensor holds (its activation or its gradient)."""
        out, start = OrderedDict(), 0
        for key, shape in self.layout:
            size = int(np.prod(shape))
            out[key] = flat[:, start : start + size].reshape(len(flat), *shape)
            start += size
        return out


class LevelMerge:
    """``reshape_transform`` of a packed dict of maps: pytorch-grad-cam's ``fasterrcnn_reshape_transform``.

    Every level's absolute value, bilinearly resized to the ``"pool"`` level
    (else the coarsest one), concatenated along channels: ``(N, C_total, h, w)``.
    """

    def __init__(self, packer: _Packer) -> None:
        self.packer = packer

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` packed maps (or their gradient) -> ``(N, C_total, h, w)``."""
        levels = self.packer.unpack(flat)
        size = (
            levels["pool"].shape[-2:] if "pool" in levels else min((v.shape[-2:] for v in levels.values()), key=_area)
        )
        return torch.cat([F.interpolate(torch.abs(v), size, mode="bilinear") for v in levels.values()], dim=1)

    def __repr__(self) -> str:
        return "fasterrcnn_reshape_transform"


def _area(shape: Sequence[int]) -> int:
    return int(shape[-2]) * int(shape[-1])


class BoxScoreModule(nn.Module):
    """``[0, 1]`` pixels ``(N, 3, H, W)`` -> ``(N, T)``: each target detection's :func:`box_scores`.

    Args:
        detector: the gradient detector (its ``module`` becomes a child, not a copy).
        targets: the detections to explain, found on the unperturbed image.
        iou_threshold: the IoU above which a detection matches its target.
    """

    def __init__(self, detector: GradientDetector, targets: Detections, iou_threshold: float) -> None:
        super().__init__()
        self.net = detector.module
        self.detect_torch: Callable[[torch.Tensor], list[dict[str, Any]]] = detector.detect_torch
        self.boxes = torch.as_tensor(np.asarray(targets.boxes, np.float32))
        self.labels = torch.as_tensor(np.asarray(targets.labels, np.int64))
        self.iou_threshold = float(iou_threshold)
        self.packer = _Packer()
        self.packed: nn.Module | None = None  # the layer whose dict output the packer stands in for

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        handle = self.packed.register_forward_hook(self._pack) if self.packed is not None else None
        try:
            found = self.detect_torch(x)
        finally:
            if handle is not None:
                handle.remove()
        if len(found) != len(x):
            raise ModelInputError(
                f"detect_torch: returned {len(found)} results for {len(x)} images; return one dict per image"
            )
        return torch.stack([box_scores(f, self.boxes, self.labels, self.iou_threshold) for f in found])

    def _pack(self, _mod: nn.Module, _inp: Any, out: Any) -> Any:
        if not isinstance(out, Mapping):
            return None
        self.packer.layout = [(str(k), tuple(v.shape[1:])) for k, v in out.items()]
        flat = self.packer(torch.cat([v.reshape(len(v), -1) for v in out.values()], dim=1))
        return type(out)(zip(out.keys(), self.packer.unpack(flat).values(), strict=True))  # type: ignore[call-arg]


class DetectionGradientModel(TorchModel):
    """A gradient detector and its target detections as a differentiable model, one output per target.

    Layer names (``layer=``) are those of the detector's own module; its
    default CAM layer is the detector's ``cam_layer`` attribute (torchvision:
    ``"backbone"``), else the automatic choice. Nothing of the detector
    changes: the guard covers its module as a child of the score module.

    Args:
        detector: the gradient detector.
        targets: the detections to explain.
        names: one display name per target (``"dog 0.93"``).
        iou_threshold: see :func:`box_scores`.
    """

    def __init__(
        self, detector: GradientDetector, targets: Detections, names: Sequence[str], iou_threshold: float = 0.5
    ) -> None:
        self.detector = detector
        self.score_module = BoxScoreModule(detector, targets, iou_threshold)
        super().__init__(
            self.score_module,
            Preprocess(scale=Scale.UNIT),
            output_kind=OutputKind.SCORES,
            class_names=list(names),
            batch_size=int(getattr(detector, "batch_size", 1) or 1),
            tune_batch=False,
            channels_last=False,
        )
        # the wrapper is built per image; what is found of the detector's structure (the CAM layer per
        # input size) is kept per detector module
        self.memo = _MEMOS.setdefault(self.detector.module, {})

    @property
    def module(self) -> nn.Module:
        """The detector's module: CAM layers are named inside it."""
        return self.detector.module  # type: ignore[no-any-return]

    def cam_layer(self, net: nn.Module, x0: torch.Tensor, layer: Any, reshape_transform: Any) -> Any:
        """The CAM layer: ``layer`` or the detector's default, a dict output packed; None for the automatic choice."""
        from xai_bridge.adapters.methods._layers import TargetLayer, choose_layer

        chosen = layer if layer is not None else getattr(self.detector, "cam_layer", None)
        if chosen is None:
            return None
        module = self._submodule(chosen)
        out = _traced_output(net, module, x0) if module is not None else None
        if module is None or not isinstance(out, Mapping):  # a tensor layer (or an unknown name): the usual rules
            return choose_layer(self.module, net, x0, 0, chosen, reshape_transform, self.memo)
        self.score_module.packed = module
        name = chosen if isinstance(chosen, str) else next(n for n, m in self.module.named_modules() if m is module)
        shape = (1, sum(int(np.prod(v[1:])) for v in out.values()))
        return TargetLayer(
            name, self.score_module.packer, shape, reshape_transform or LevelMerge(self.score_module.packer)
        )

    def _submodule(self, layer: Any) -> nn.Module | None:
        if isinstance(layer, nn.Module):
            return layer if any(m is layer for m in self.module.modules()) else None
        try:
            return self.module.get_submodule(str(layer)) if layer else None
        except AttributeError:
            return None

    def __repr__(self) -> str:
        return f"DetectionGradientModel({type(self.module).__name__}, {len(self.score_module.boxes)} targets)"


#: Per detector module: the memo of its wrappers (see ``TorchModel.memo``).
_MEMOS: weakref.WeakKeyDictionary[nn.Module, dict[Any, Any]] = weakref.WeakKeyDictionary()
#: Per layer module and input shape: the output shapes of a layer returning a dict of maps, or None (a tensor).
_TRACED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], Any]] = weakref.WeakKeyDictionary()


def _traced_output(net: nn.Module, module: nn.Module, x: torch.Tensor) -> Any:
    """What ``module`` returns in one forward pass of ``net(x)``: a dict of per-level shapes, or None.

    Remembered per layer and input shape (the wrapper is built per image; the
    structure of the detector's module is not).
    """
    known = _TRACED.setdefault(module, {})
    key = tuple(x.shape[1:])
    if key not in known:
        seen: list[Any] = []
        handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            with torch.no_grad():
                net(x)
        finally:
            handle.remove()
        out = seen[0] if seen else None
        known[key] = {k: tuple(v.shape) for k, v in out.items()} if isinstance(out, Mapping) else None
    return known[key]
