"""Helpers every metric shares: output columns, scores, NCHW pixels and a torch module around ``predict``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge.explanation import Explanation
from xai_bridge.models import CountingModel, OutputKind, softmax

if TYPE_CHECKING:  # pragma: no cover
    pass


def _columns(model: Any, exp: Explanation) -> np.ndarray:
    """Output column of each target, ``(N, T)``.

    For caption models the targets are token ids but the outputs are one
    column per reference token, in order: column ``t`` for target ``t``.
    """
    inner = model.wrapped if isinstance(model, CountingModel) else model
    if hasattr(inner, "reference") and hasattr(inner, "captioner"):
        return np.tile(np.arange(exp.n_targets), (exp.n_images, 1))
    return np.asarray(exp.targets)


def _scores(outputs: np.ndarray, columns: np.ndarray | int, use_softmax: bool, model: Any) -> np.ndarray:
    if use_softmax and getattr(model, "output_kind", None) != OutputKind.PROBABILITIES:
        outputs = softmax(outputs, axis=1)
    return (
        outputs[:, columns]
        if np.ndim(columns) == 0
        else np.take_along_axis(outputs, np.asarray(columns)[:, None], 1)[:, 0]
    )


def _nchw(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)), dtype=np.float32)


def _predict_module(model: Any) -> Any:
    """A torch ``nn.Module`` (eval mode) whose forward calls ``model.predict``.

    It takes float ``(N, 3, H, W)`` pixels in [0, 255] (rounded and clipped to
    uint8 NHWC) and returns the model's outputs as a float tensor: the array
    contract Quantus and pytorch-grad-cam expect of a torch model.
    """
    import torch

    class _PredictModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

        def forward(self, x: Any) -> Any:
            arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
            images = np.clip(np.rint(np.transpose(arr, (0, 2, 3, 1))), 0, 255).astype(np.uint8)
            return torch.from_numpy(np.ascontiguousarray(model.predict(images), dtype=np.float32))

    return _PredictModule().eval()
