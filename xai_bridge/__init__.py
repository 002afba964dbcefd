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

from . import masks
from .errors import (
    BackendNotInstalledError,
    FormatError,
    ImageInputError,
    MethodNotApplicableError,
    ModelInputError,
    UnknownMethodError,
    XaiBridgeError,
)
from .explain import explain, explain_many
from .explanation import Explanation
from .images import Layout, load_image, load_images
from .models import CountingModel, DifferentiableModel, Model, OutputKind, Preprocess, Scale, as_model, softmax
from .normalize import Norm, normalize
from .registry import BackendSpec, Registry, available_methods, default_registry
from .targets import TopK, top_k

__version__ = "0.1.0"

__all__ = [
    "ArrayModel",
    "BackendNotInstalledError",
    "BackendSpec",
    "BlackBoxModel",
    "CountingModel",
    "DifferentiableModel",
    "Explanation",
    "FormatError",
    "ImageInputError",
    "ImageMasker",
    "Layout",
    "MaskKind",
    "MethodNotApplicableError",
    "Model",
    "ModelInputError",
    "Norm",
    "OutputKind",
    "Preprocess",
    "Registry",
    "Scale",
    "TopK",
    "TorchModel",
    "UnknownMethodError",
    "XaiBridgeError",
    "ZeroShotModel",
    "as_model",
    "available_methods",
    "default_registry",
    "evaluate",
    "explain",
    "explain_caption",
    "explain_dataset",
    "explain_many",
    "load_image",
    "load_images",
    "masks",
    "normalize",
    "softmax",
    "top_k",
]

# name -> module holding it; imported on first access (none of them imports a heavy library)
_LAZY = {
    "TorchModel": "xai_bridge.adapters.models",
    "ArrayModel": "xai_bridge.adapters.models",
    "BlackBoxModel": "xai_bridge.adapters.models",
    "ZeroShotModel": "xai_bridge.adapters.models",
    "ImageMasker": "xai_bridge.adapters.backends.shap_backend",
    "MaskKind": "xai_bridge.adapters.backends.shap_backend",
    "explain_caption": "xai_bridge.caption",
    "evaluate": "xai_bridge.metrics",
    "explain_dataset": "xai_bridge.dataset",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xai_bridge' has no attribute {name!r}")
