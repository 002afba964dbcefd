"""What a model's declared input shape says about its preprocessing: layout, channels, size.

Keras and ONNX graphs declare their input shape; where it is ``(N, H, W, C)``
or ``(N, C, H, W)`` with ``C`` 3 (RGB) or 1 (grey), the declared
:class:`~xai_bridge.preprocess.Preprocess` takes that layout and channel
count (the RGB image is turned grey by it, see ``Preprocess.channels``).
Light: no framework is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from xai_bridge.preprocess import Preprocess

__all__ = ["fit_input_shape"]


def fit_input_shape(shape: Sequence[Any], preprocess: Preprocess) -> Preprocess:
    """``preprocess`` with the layout, channel count (3 or 1) and a missing size of an ``(N, ., ., .)`` input.

    Shared by the Keras and ONNX adapters; a shape that says nothing (no axis
    of 1 or 3 channels, or both ends alike) keeps ``preprocess`` as it is.
    """
    first, last = shape[1], shape[3]
    if last in (1, 3) and first not in (1, 3):
        layout, hw, channels = "NHWC", shape[1:3], int(last)
    elif first in (1, 3) and last not in (1, 3):
        layout, hw, channels = "NCHW", shape[2:4], int(first)
    else:
        return preprocess
    changes: dict[str, Any] = {"layout": layout, "channels": channels}
    if preprocess.size is None and all(isinstance(d, int) and d > 0 for d in hw):
        changes["size"] = (int(hw[0]), int(hw[1]))
    return replace(preprocess, **changes)
