"""Which raw models are object detectors, and the detector adapter each becomes.

The detection routing asks :func:`is_known_detector` (imports nothing) and
:func:`wrap_detector` for the models it should explain per detection with no
wrapper: a Hugging Face ``...ForObjectDetection`` model and an Ultralytics
YOLO model (or the path of YOLO weights or a YOLO config, which needs the
``yolo`` extra). The routing asks before ``as_model``, whose table would take
a DETR for a Hugging Face classifier. ONNX detectors are not told apart from
ONNX classifiers without opening the graph: they are wrapped explicitly,
``xb.OnnxDetector(path)``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .hf_detectors import is_hf_detector
from .yolo import is_yolo

if TYPE_CHECKING:
    from xai_bridge.detection import Detector

__all__ = ["is_known_detector", "wrap_detector"]

_YOLO_FILE = re.compile(r"^yolo.*\.(pt|ya?ml)$", re.IGNORECASE)


def _yolo_file(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike)) and bool(_YOLO_FILE.match(Path(obj).name))


def is_known_detector(obj: Any) -> bool:
    """A Hugging Face object detection model, a YOLO model, or a YOLO weights / config path."""
    return is_hf_detector(obj) or is_yolo(obj) or _yolo_file(obj)


def wrap_detector(obj: Any) -> Detector | None:
    """``obj``'s detector adapter (:class:`HFDetector`, :class:`YOLODetector`), or None for another model.

    Raises:
        LibraryNotInstalledError: a YOLO weights or config path without the ``yolo`` extra.
    """
    if is_hf_detector(obj):
        from .hf_detectors import HFDetector

        return HFDetector(obj)
    if is_yolo(obj) or _yolo_file(obj):
        from .yolo import YOLODetector

        return YOLODetector(obj)
    return None
