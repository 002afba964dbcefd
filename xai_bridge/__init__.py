"""xai-bridge: one call and one result format for image explanations.

Route one call to shap, lime, captum, pytorch-grad-cam, torchcam or the
built-in methods, and get every result back as an :class:`Explanation`::

    import xai_bridge as xb
    model = xb.TorchModel(net, xb.Preprocess.imagenet())
    exp = xb.explain(model, "cat.jpg", "gradcam.GradCAM", targets=xb.top_k(3))

Only numpy and Pillow are imported here; backends load on first use.
"""

from __future__ import annotations

from typing import Any

from .errors import (
    BackendNotInstalledError,
    FormatError,
    ImageInputError,
    LibraryNotInstalledError,
    MethodNotApplicableError,
    ModelInputError,
    ParameterError,
    UnknownMethodError,
    XaiBridgeError,
)
from .explanation import Explanation
from .images import Layout, load_image, load_images
from .models import CountingModel, DifferentiableModel, Model, OutputKind, Preprocess, Scale, as_model, softmax
from .normalization import Norm, normalize
from .options import ImageMasker, MaskKind, NoiseKind, NoiseTunnel, Segmentation, SegmentationKind
from .registry import BackendSpec, MethodSpec, Registry, available_methods, default_registry
from .routing import explain, explain_many
from .targets import TopK, top_k

__version__ = "0.1.0"

# name -> module holding it; imported on first access (none of them imports a heavy library)
_LAZY = {
    "TorchModel": "xai_bridge.adapters.models",
    "ArrayModel": "xai_bridge.adapters.models",
    "BlackBoxModel": "xai_bridge.adapters.models",
    "ZeroShotModel": "xai_bridge.adapters.models",
    "explain_caption": "xai_bridge.captions",
    "explain_answer": "xai_bridge.captions",
    "estimate_calls": "xai_bridge.captions",
    "TagModel": "xai_bridge.adapters.models",
    "evaluate": "xai_bridge.evaluation",
    "estimate_evaluations": "xai_bridge.evaluation",
    "Box": "xai_bridge.evaluation",
    "explain_dataset": "xai_bridge.datasets",
    "explain_detections": "xai_bridge.detection",
    "DetectionModel": "xai_bridge.adapters.models.detectors",
    "TorchvisionDetector": "xai_bridge.adapters.models.detectors",
    "Region": "xai_bridge.segmentation",
    "explain_segmentation": "xai_bridge.segmentation",
    "TorchvisionSegmenter": "xai_bridge.adapters.models.segmenters",
    "HFSegmenter": "xai_bridge.adapters.models.segmenters",
    "HFDetector": "xai_bridge.adapters.models.hf_detectors",
    "AzureVision40Detector": "xai_bridge.adapters.captioners",
    "AzureVisionV32Detector": "xai_bridge.adapters.captioners",
    "OnnxDetector": "xai_bridge.adapters.models.onnx_detectors",
    "YOLODetector": "xai_bridge.adapters.models.yolo",
}

#: Sub-packages and modules reachable as attributes (``xb.viz.plot``, ``xb.masks``), imported on first access.
_MODULES = {
    "viz": "xai_bridge.viz",
    "evaluation": "xai_bridge.evaluation",
    "datasets": "xai_bridge.datasets",
    "detection": "xai_bridge.detection",
    "segmentation": "xai_bridge.segmentation",
    "masks": "xai_bridge.viz.masks",
    "plot": "xai_bridge.viz.plot",
    "compare": "xai_bridge.viz.compare",
    "report": "xai_bridge.viz.report",
}

__all__ = [
    "ArrayModel",
    "AzureVision40Detector",
    "AzureVisionV32Detector",
    "BackendNotInstalledError",
    "BackendSpec",
    "BlackBoxModel",
    "Box",
    "CountingModel",
    "DetectionModel",
    "DifferentiableModel",
    "Explanation",
    "FormatError",
    "HFDetector",
    "HFSegmenter",
    "ImageInputError",
    "ImageMasker",
    "Layout",
    "LibraryNotInstalledError",
    "MaskKind",
    "MethodNotApplicableError",
    "MethodSpec",
    "Model",
    "ModelInputError",
    "NoiseKind",
    "NoiseTunnel",
    "Norm",
    "OnnxDetector",
    "OutputKind",
    "ParameterError",
    "Preprocess",
    "Region",
    "Registry",
    "Scale",
    "Segmentation",
    "SegmentationKind",
    "TagModel",
    "TopK",
    "TorchModel",
    "TorchvisionDetector",
    "TorchvisionSegmenter",
    "UnknownMethodError",
    "XaiBridgeError",
    "YOLODetector",
    "ZeroShotModel",
    "as_model",
    "available_methods",
    "default_registry",
    "estimate_calls",
    "estimate_evaluations",
    "evaluate",
    "explain",
    "explain_answer",
    "explain_caption",
    "explain_dataset",
    "explain_detections",
    "explain_many",
    "explain_segmentation",
    "load_image",
    "load_images",
    "masks",
    "normalize",
    "softmax",
    "top_k",
]


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    raise AttributeError(f"module 'xai_bridge' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Every public name, lazy ones included, so tab completion finds them."""
    return sorted(set(globals()) | set(__all__) | set(_MODULES))
