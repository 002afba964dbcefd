"""The one check every adapter runs on a model's first real output.

A model's outputs must be one score per class, ``(N, classes)``, and the
class names (the user's, a weights enum's, a config's) must name exactly
those outputs: a mismatch would otherwise give wrong names silently (a
10-class head labelled 'tench', 'goldfish', ...) or an ``IndexError`` deep
in target resolution. Image-shaped outputs (a segmentation or an
autoencoder) are refused rather than flattened into thousands of "classes".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xai_bridge.errors import ModelInputError
from xai_bridge.preprocess import Preprocess

__all__ = ["check_outputs", "class_count", "first_call_failure"]


def class_count(shape: Sequence[int]) -> int:
    """The number of classes of an output of ``shape`` (trailing axes of size 1 dropped), or the error.

    Raises:
        ModelInputError: more than one non-trivial axis after the batch axis.
    """
    rest = [int(d) for d in shape[1:]]
    while len(rest) > 1 and rest[-1] == 1:
        rest.pop()
    if len(rest) > 1:
        raise ModelInputError(
            f"model: expected outputs of shape (N, classes), got {tuple(int(d) for d in shape)} (an image-shaped "
            "output); explain a classifier, or wrap the model so that it returns one score per class"
        )
    return rest[0] if rest else 1


def check_outputs(out: np.ndarray, class_names: Sequence[str] | None) -> np.ndarray:
    """``out`` unchanged after checking its shape and that ``class_names`` name its outputs.

    Args:
        out: the model's first real output (numpy, any rank).
        class_names: the names the model will report, or None.

    Raises:
        ModelInputError: image-shaped outputs, or as many names as outputs not.
    """
    n = class_count(out.shape)
    if class_names is not None and len(class_names) != n:
        shown = ", ".join(repr(str(c)) for c in list(class_names)[:3])
        raise ModelInputError(
            f"class_names: expected {n} names (one per model output), got {len(class_names)} ({shown}, ...); "
            "pass class_names= matching the model's head, or weights / a processor of this very model"
        )
    return out


def first_call_failure(err: Exception, preprocess: Preprocess, shape: Sequence[int]) -> str:
    """The one line saying that the user's model failed on its first input, and what it was fed.

    A model's own error (a shape or channel mismatch deep in its first layer)
    names neither xai-bridge's argument nor the fix; this says what the
    declared preprocessing made of the images and how to change it.
    """
    reason = (str(err).strip().splitlines() or [""])[0][:200]
    h, w = preprocess.size or tuple(shape[1:3])
    fed = f"{h}x{w}, {preprocess.channels} channel(s), {preprocess.layout}"
    return (
        f"model: failed on its first input ({fed}) with {type(err).__name__}: {reason}; declare what it takes, "
        "e.g. preprocess=Preprocess(size=(224, 224), channels=1) or resize the images to the model's size"
    )
