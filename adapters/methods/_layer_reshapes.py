"""``reshape_transform`` values that make a layer's output a ``(N, C, h, w)`` map: token grids, channels-last maps.

A CAM method hooks a layer whose output must be a channels-first map; a ViT's
tokens (:class:`TokenGrid`) and a channels-last map (:class:`ChannelsLast`,
timm's Swin and ConvNeXt) are reshaped into one, as pytorch-grad-cam's
``reshape_transform=`` does. :mod:`._layers` picks the one a layer needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from xai_bridge.errors import ParameterError

__all__ = ["ChannelsLast", "TokenGrid"]

#: Prefix tokens tried when the model does not say how many it has.
_MAX_PREFIX_TOKENS = 8


@dataclass(frozen=True)
class TokenGrid:
    """``reshape_transform`` for token outputs: ``(N, prefix + h * w, D)`` -> ``(N, D, h, w)``.

    Drops the prefix tokens (class token, ...) and lays the patch tokens out
    row by row, like pytorch-grad-cam's ``vit_reshape_transform``.

    Attributes:
        prefix_tokens: tokens before the patch grid.
        height: grid rows.
        width: grid columns.
    """

    prefix_tokens: int
    height: int
    width: int

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        """Reshape ``(N, L, D)`` tokens into a ``(N, D, h, w)`` map."""
        if tensor.ndim != 3 or tensor.shape[1] != self.prefix_tokens + self.height * self.width:
            raise ParameterError(
                f"reshape_transform: expected tokens of shape (N, {self.prefix_tokens + self.height * self.width}, D), "
                f"got {tuple(tensor.shape)}"
            )
        grid = tensor[:, self.prefix_tokens :, :].reshape(tensor.shape[0], self.height, self.width, tensor.shape[2])
        return grid.permute(0, 3, 1, 2)

    @classmethod
    def infer(cls, n_tokens: int, prefix_tokens: int | None = None) -> TokenGrid | None:
        """The square grid of ``n_tokens`` tokens, or None when there is none.

        Args:
            n_tokens: ``L``, tokens per image.
            prefix_tokens: known prefix count (e.g. timm's ``num_prefix_tokens``);
                by default the smallest count in 0..8 leaving a square grid.
        """
        tries = [prefix_tokens] if prefix_tokens is not None else range(_MAX_PREFIX_TOKENS + 1)
        for prefix in tries:
            side = math.isqrt(max(n_tokens - prefix, 0))
            if side >= 2 and side * side == n_tokens - prefix:
                return cls(int(prefix), side, side)
        return None


@dataclass(frozen=True)
class ChannelsLast:
    """``reshape_transform`` for channels-last maps: ``(N, h, w, C)`` -> ``(N, C, h, w)``."""

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move the channel axis of an ``(N, h, w, C)`` map to position 1."""
        if tensor.ndim != 4:
            raise ParameterError(
                f"reshape_transform: expected a channels-last map (N, h, w, C), got {tuple(tensor.shape)}"
            )
        return tensor.permute(0, 3, 1, 2)
