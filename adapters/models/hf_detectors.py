"""Hugging Face object detectors (DETR, Conditional / Deformable DETR, YOLOS, RT-DETR) as detectors.

:class:`HFDetector` runs the model through its own image processor and
``post_process_object_detection`` (boxes in the pixels of the image given),
names the classes from ``config.id2label``, and adds what D-RISE needs to
compare detections: each detection's query's class probabilities and
objectness. Two families of heads exist:

- softmax over the classes plus a last "no object" class (DETR, YOLOS):
  ``probabilities`` are the class probabilities without "no object", and
  ``objectness`` is ``1 - p(no object)``;
- independent sigmoids per class (Conditional and Deformable DETR, RT-DETR):
  ``probabilities`` are the sigmoids, ``objectness`` the largest of them.

:meth:`HFDetector.detect_torch` is the same detector written in torch end to
end (the processor's resize, rescale, normalisation and padding, then its
post-processing with the scores keeping the graph), so the gradient and CAM
path explains these models too. The model is never changed: it runs in eval
mode under the model guard, as every torch adapter does.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xai_bridge._validate import int_at_least
from xai_bridge.detection import Detections
from xai_bridge.errors import ModelInputError

from .transformers import class_names_from_config, is_transformers_model

__all__ = ["HFDetector", "is_hf_detector"]

_DETECTION_HINT = "an AutoModelForObjectDetection (DETR, Conditional / Deformable DETR, YOLOS, RT-DETR)"


def is_hf_detector(obj: Any) -> bool:
    """Whether ``obj`` is a transformers object detection model (checked without importing transformers)."""
    return is_transformers_model(obj) and type(obj).__name__.endswith("ForObjectDetection")


class HFDetector:
    """A Hugging Face ``AutoModelForObjectDetection`` with its image processor, as a detector.

    Example::

        detector = xb.HFDetector("path/to/detr")  # a folder saved with save_pretrained (model + processor)
        [exp] = xb.explain_detections(detector, "street.jpg", "builtin.DRISE", targets=xb.top_k(3))

    Args:
        model: the model, or a local folder (or a name in the local Hugging Face
            cache) holding the model and its ``preprocessor_config.json``; nothing is downloaded.
        processor: its image processor (default: loaded from the model's folder,
            ``model.name_or_path``).
        threshold: the lowest score ``detect`` returns (weak detections still
            count, weakly, when a perturbed image is compared with its target).
        class_names: one name per label index (default: ``config.id2label``).
        batch_size: images per forward pass.
    """

    def __init__(
        self,
        model: Any,
        processor: Any = None,
        *,
        threshold: float = 0.01,
        class_names: Sequence[str] | None = None,
        batch_size: int = 4,
    ) -> None:
        if isinstance(model, (str, Path)):
            model, processor = _load(str(model), processor)
        if not is_hf_detector(model):
            raise ModelInputError(
                f"model: expected {_DETECTION_HINT}, got {type(model).__name__}; "
                "explain image classifiers with xb.explain(model, images, method)"
            )
        if processor is None:
            processor = _processor_near(model)
        if not callable(getattr(processor, "post_process_object_detection", None)):
            raise ModelInputError(
                f"processor: expected the model's object detection image processor, got {type(processor).__name__}; "
                "pass AutoImageProcessor.from_pretrained(folder)"
            )
        batch_size = int_at_least("batch_size", batch_size, 1)
        self.module = model
        self.processor = processor
        self.threshold = float(threshold)
        self.class_names: Sequence[str] | None = (
            list(class_names) if class_names is not None else class_names_from_config(model.config)
        )
        self.batch_size = int(batch_size)
        self._geometry: dict[tuple[int, int], _Geometry] = {}

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> HFDetector:
        """The detector saved in a local folder (or the local cache) with its processor: nothing is downloaded."""
        return cls(name_or_path, **kwargs)

    def softmax_head(self, logits: Any) -> bool:
        """Whether the head is a softmax with a last "no object" class (DETR, YOLOS) rather than sigmoids."""
        config = self.module.config
        return bool(logits.shape[-1] == config.num_labels + 1 or getattr(config, "use_focal_loss", True) is False)

    @property
    def cam_layer(self) -> str | None:
        """The default CAM layer: the convolution feeding the backbone's last feature map to the transformer.

        DETR and Conditional DETR: ``model.input_projection``; Deformable DETR
        and RT-DETR: the last of their per-level projections. None (the
        automatic choice) for a model without one (YOLOS, a ViT).
        """
        for name in ("model.input_projection", "model.input_proj", "model.encoder_input_proj"):
            try:
                module = self.module.get_submodule(name)
            except AttributeError:
                continue
            return f"{name}.{len(module) - 1}" if hasattr(module, "__len__") else name
        return None

    def detect(self, images: np.ndarray) -> list[Detections]:
        """One :class:`Detections` per uint8 ``(N, H, W, 3)`` image: the processor's pre- and post-processing."""
        import torch
        from xai_bridge.adapters._torch import model_guard

        out: list[Detections] = []
        device = _device(self.module)
        with model_guard(self.module), torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = [np.ascontiguousarray(img) for img in images[start : start + self.batch_size]]
                inputs = self.processor(images=batch, return_tensors="pt", input_data_format="channels_last")
                outputs = self.module(**{k: v.to(device) for k, v in inputs.items()})
                size = [tuple(img.shape[:2]) for img in batch]
                found = self.processor.post_process_object_detection(
                    outputs, threshold=self.threshold, target_sizes=size
                )
                probs, objectness = self._probabilities(outputs.logits)
                for i, det in enumerate(found):
                    query = _query_of(det["boxes"], outputs.pred_boxes[i], size[i])
                    out.append(
                        Detections.parse(
                            {**det, "probabilities": probs[i][query], "objectness": objectness[i][query]},
                            "the processor's post_process_object_detection",
                        )
                    )
        return out

    def detect_torch(self, pixels: Any) -> list[dict[str, Any]]:
        """Detections of float32 ``(N, 3, H, W)`` RGB pixels in ``[0, 1]``, differentiable in ``pixels``.

        The processor's preprocessing in torch, the model, and its
        post-processing with the scores, probabilities and boxes keeping the
        graph. The resize is the processor's filter on float pixels, smooth
        in them; the processor resizes uint8 images and rounds, so where an
        image is resized the two differ by that rounding (at most one grey
        level per pixel), and not at all where the image has the input size.
        """
        import torch

        n, _, h, w = pixels.shape
        geometry = self._geometry_for(int(h), int(w))
        x = geometry.apply(pixels)
        kwargs: dict[str, Any] = {"pixel_values": x}
        if geometry.mask is not None:
            kwargs["pixel_mask"] = geometry.mask.to(x.device).expand(n, -1, -1)
        outputs = self.module(**kwargs)
        probs, objectness = self._probabilities(outputs.logits)
        softmax = self.softmax_head(outputs.logits)
        corners = _corners(outputs.pred_boxes) * torch.tensor([w, h, w, h], dtype=x.dtype, device=x.device)
        results = []
        for i in range(n):
            query, labels, scores = self._select(probs[i], softmax)
            results.append(
                {
                    "boxes": corners[i][query],
                    "labels": labels,
                    "scores": scores,
                    "probabilities": probs[i][query],
                    "objectness": objectness[i][query],
                }
            )
        return results

    def _probabilities(self, logits: Any) -> tuple[Any, Any]:
        """``(N, Q, C)`` class probabilities and ``(N, Q)`` objectness (see the module docstring)."""
        if self.softmax_head(logits):
            full = logits.softmax(-1)
            return full[..., :-1], 1 - full[..., -1]
        probs = logits.sigmoid()
        return probs, probs.max(-1).values

    def _select(self, probs: Any, softmax: bool) -> tuple[Any, Any, Any]:
        """Query indices, labels and scores one image keeps, as ``post_process_object_detection`` keeps them."""
        if softmax:
            scores, labels = probs.max(-1)
            query = (scores > self.threshold).nonzero().flatten()
            return query, labels[query], scores[query]
        flat = probs.flatten()
        scores, index = flat.topk(min(self._top_k(probs.shape[0]), flat.numel()))
        keep = scores > self.threshold
        index = index[keep]
        return index // probs.shape[1], index % probs.shape[1], scores[keep]

    def _top_k(self, queries: int) -> int:
        """How many (query, class) pairs the processor ranks: its ``top_k`` (100 by default), else every query."""
        param = inspect.signature(self.processor.post_process_object_detection).parameters.get("top_k")
        return int(param.default) if param is not None and isinstance(param.default, int) else queries

    def _geometry_for(self, h: int, w: int) -> _Geometry:
        if (h, w) not in self._geometry:
            self._geometry[(h, w)] = _Geometry.measure(self.processor, h, w)
        return self._geometry[(h, w)]

    def __repr__(self) -> str:
        return f"HFDetector({type(self.module).__name__}, {len(self.class_names or [])} classes)"


class _Geometry:
    """What the processor does to an ``h x w`` image, measured once on a white image of that size.

    Attributes:
        resized: ``(height, width)`` the image is resized to.
        padded: ``(height, width)`` of the model input (padding at the bottom and right).
        pad_value: the normalised value of padded pixels.
        mask: ``(1, H, W)`` int64 pixel mask when the processor returns one.
    """

    def __init__(self, processor: Any, resized: tuple[int, int], padded: tuple[int, int], pad: float, mask: Any):
        self.processor = processor
        self.resized, self.padded, self.pad_value, self.mask = resized, padded, pad, mask

    @classmethod
    def measure(cls, processor: Any, h: int, w: int) -> _Geometry:
        white = np.full((h, w, 3), 255, np.uint8)
        inputs = processor(images=[white], return_tensors="pt", input_data_format="channels_last")
        values = inputs["pixel_values"][0]
        ph, pw = int(values.shape[-2]), int(values.shape[-1])
        inside = (values != values[:, -1:, -1:]).any(0)  # a white image differs from its padding only
        mask = inputs.get("pixel_mask")
        if mask is not None:
            rows, cols = int(mask[0].any(1).sum()), int(mask[0].any(0).sum())
        elif bool(inside.any()):
            rows, cols = int(inside.any(1).sum()), int(inside.any(0).sum())
        else:
            rows, cols = ph, pw
        pad = float(values[0, -1, -1]) if (rows, cols) != (ph, pw) else 0.0
        return cls(processor, (rows, cols), (ph, pw), pad, None if mask is None else mask[:1].long())

    def apply(self, pixels: Any) -> Any:
        """The processor's preprocessing of ``[0, 1]`` pixels, in torch and differentiable."""
        import torch
        import torch.nn.functional as F

        p = self.processor
        x = pixels * 255.0
        if tuple(x.shape[-2:]) != self.resized:
            mode = {0: "nearest", 3: "bicubic"}.get(int(getattr(p, "resample", 2) or 2), "bilinear")
            antialias = mode != "nearest"
            x = F.interpolate(x, size=self.resized, mode=mode, antialias=antialias, align_corners=None)
        if getattr(p, "do_rescale", True):
            x = x * float(getattr(p, "rescale_factor", 1 / 255))
        if getattr(p, "do_normalize", True):
            mean = torch.tensor(_triple(p.image_mean), dtype=x.dtype, device=x.device)[:, None, None]
            std = torch.tensor(_triple(p.image_std), dtype=x.dtype, device=x.device)[:, None, None]
            x = (x - mean) / std
        bottom, right = self.padded[0] - self.resized[0], self.padded[1] - self.resized[1]
        if bottom or right:
            x = F.pad(x, (0, right, 0, bottom), value=self.pad_value)
        return x


def _triple(value: Any) -> list[float]:
    return [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]


def _corners(boxes: Any) -> Any:
    """``(cx, cy, w, h)`` to ``(x0, y0, x1, y1)``."""
    import torch

    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def _query_of(boxes: Any, pred_boxes: Any, size: tuple[int, ...]) -> Any:
    """The query each post-processed box came from (its box, scaled as the processor scales it)."""
    import torch

    h, w = size
    scale = torch.tensor([w, h, w, h], dtype=pred_boxes.dtype, device=pred_boxes.device)
    queries = _corners(pred_boxes) * scale
    return (boxes.to(queries)[:, None] - queries[None]).abs().sum(-1).argmin(-1)


def _device(module: Any) -> Any:
    import torch

    return next((p.device for p in module.parameters()), torch.device("cpu"))


def _processor_near(model: Any) -> Any:
    folder = Path(str(getattr(model, "name_or_path", "") or ""))
    if not str(folder) or not (folder / "preprocessor_config.json").is_file():
        raise ModelInputError(
            f"processor: none given and no preprocessor_config.json in name_or_path={str(folder)!r}; "
            "pass processor=AutoImageProcessor.from_pretrained(...) or save it beside the model"
        )
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)


def _load(name: str, processor: Any) -> tuple[Any, Any]:
    """The model (and processor, unless given) from a local folder or the local cache."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForObjectDetection

    folder = Path(name)
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ModelInputError(f"model: no config.json in {name!r}; save the model there with model.save_pretrained")
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelInputError(
            f"model: {name!r} is not a local model folder or cached model ({type(err).__name__}); "
            "pass a folder saved with model.save_pretrained"
        ) from None
    if processor is None:
        if folder.is_dir() and not (folder / "preprocessor_config.json").is_file():
            raise ModelInputError(
                f"processor: no preprocessor_config.json in {name!r}; save the image processor there with "
                "processor.save_pretrained(folder), or pass processor="
            )
        processor = AutoImageProcessor.from_pretrained(name, local_files_only=True)
    try:
        model = AutoModelForObjectDetection.from_pretrained(name, local_files_only=True)
    except ValueError:
        raise ModelInputError(
            f"model: {name!r} holds a {type(config).__name__} ({', '.join(config.architectures or [])}), "
            f"not {_DETECTION_HINT}; explain image classifiers with xb.explain(model, images, method)"
        ) from None
    return model, processor
