"""Baselines of the captum methods, in pixel units 0-255, from a ``baselines=`` value.

A number (0 = black), an RGB *tuple* ``(r, g, b)``, an image array
``(H, W, 3)`` or ``(N, H, W, 3)``, ``"random"`` (uniform noise in [0, 255)
from the request's seeded generator, drawn baseline by baseline, image by
image), ``"mean"`` (the image's mean colour), or a *list* of those.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xai_bridge.errors import ParameterError

__all__ = ["baselines_list", "describe_baselines", "one_baseline"]


def baselines_list(spec: Any, images: np.ndarray, rng: np.random.Generator) -> list[Any]:
    """Each baseline as a float32 tensor ``(N, 3, H, W)`` in pixel units (a list spec gives several)."""
    import torch

    specs = list(spec) if isinstance(spec, list) else [spec]
    if not specs:
        raise ParameterError("baselines: expected at least one baseline, got an empty list")
    out = []
    for s in specs:
        arr = np.stack([one_baseline(s, img, rng, i) for i, img in enumerate(images)])
        out.append(torch.from_numpy(arr))
    return out


def one_baseline(spec: Any, image: np.ndarray, rng: np.random.Generator, index: int) -> np.ndarray:
    h, w = image.shape[:2]
    hint = (
        "baselines: expected a number, an RGB tuple, an image array, 'random', 'mean' or a list of those "
        f"(pixel units 0-255), got {spec!r}"
    )
    if isinstance(spec, str):
        if spec == "random":
            return rng.uniform(0.0, 255.0, size=(3, h, w)).astype(np.float32)
        if spec == "mean":
            return np.broadcast_to(image.reshape(-1, 3).mean(0).astype(np.float32)[:, None, None], (3, h, w)).copy()
        raise ParameterError(hint)
    if isinstance(spec, bool):
        raise ParameterError(hint)
    if isinstance(spec, (int, float, np.integer, np.floating)):
        return np.full((3, h, w), float(spec), np.float32)
    if isinstance(spec, tuple):
        if len(spec) != 3 or not all(isinstance(v, (int, float, np.integer, np.floating)) for v in spec):
            raise ParameterError(hint)
        return np.broadcast_to(np.asarray(spec, np.float32)[:, None, None], (3, h, w)).copy()
    arr = np.asarray(spec)
    if arr.ndim == 4 and arr.shape[1:] == (h, w, 3):
        arr = arr[index]
    if arr.shape != (h, w, 3) or not np.issubdtype(arr.dtype, np.number):
        raise ParameterError(
            f"baselines: an image baseline must have shape {(h, w, 3)} (HWC, pixel units 0-255), "
            f"got {np.asarray(spec).shape}"
        )
    return arr.astype(np.float32).transpose(2, 0, 1).copy()


def describe_baselines(spec: Any) -> Any:
    if isinstance(spec, list):
        return [describe_baselines(s) for s in spec]
    if isinstance(spec, tuple):
        return [float(v) for v in spec]
    if isinstance(spec, np.ndarray):
        return f"array{tuple(spec.shape)}"
    if isinstance(spec, (np.integer, np.floating)):
        return spec.item()
    return spec
