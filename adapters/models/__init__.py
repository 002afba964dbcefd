"""Model adapters: torch modules, Keras models, ONNX graphs, NHWC array callables, black boxes, taggers, bundled models.

Each module defines its adapter and the ``wrap(model, request)`` that
:func:`xai_bridge.as_model` reaches through the table in ``_table.py``.
Torch, Keras and onnxruntime are imported only when their adapter is used.
"""

from __future__ import annotations

from typing import Any

from .arrays import ArrayModel, BlackBoxModel

__all__ = [
    "ArrayModel",
    "BlackBoxModel",
    "KerasModel",
    "OnnxModel",
    "PixelModule",
    "TagModel",
    "TorchModel",
    "ZeroShotModel",
    "efficientnet_lite0",
    "model_guard",
]

_LAZY = {
    "TorchModel": ".torch",
    "PixelModule": ".torch",
    "KerasModel": ".keras",
    "KerasModule": ".keras",
    "OnnxModel": ".onnx",
    "model_guard": "xai_bridge.adapters._torch",
    "hook_count": "xai_bridge.adapters._torch",
    "ZeroShotModel": ".zero_shot",
    "TagModel": ".tags",
    "efficientnet_lite0": ".zoo",
    "imagenet_class_names": ".zoo",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
