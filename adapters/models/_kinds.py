"""Which library a model object comes from, read from its classes' module names: nothing is imported.

The model adapter table asks these before it imports an adapter, so that
recognising (or refusing) a model never loads torch, Keras or onnxruntime.
"""

from __future__ import annotations

from typing import Any

__all__ = ["from_library", "is_keras_model", "is_torch_module"]


def from_library(obj: Any, packages: tuple[str, ...], class_name: str | None = None) -> bool:
    """Whether a class of ``obj`` (its MRO) comes from one of ``packages`` (and is named ``class_name``)."""
    return any(
        c.__module__.split(".", 1)[0] in packages and (class_name is None or c.__name__ == class_name)
        for c in type(obj).__mro__
    )


def is_keras_model(obj: Any) -> bool:
    """A Keras (3 or tf_keras) model."""
    return from_library(obj, ("keras", "tf_keras"), "Model")


def is_torch_module(obj: Any) -> bool:
    """A ``torch.nn.Module``."""
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(obj).__mro__)
