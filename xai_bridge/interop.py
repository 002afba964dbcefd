"""Conversions between :class:`~xai_bridge.Explanation` and other libraries' views of a result.

``library_view`` gives the maps as the library that made them scales them
(torchcam's layer-range normalisation, min-max elsewhere); ``to_shap`` and
``from_shap`` convert to and from ``shap.Explanation``, so shap's plots take
any method's result and shap results join xai-bridge's comparisons. The
:class:`~xai_bridge.Explanation` methods of the same names call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import LibraryNotInstalledError, ParameterError

if TYPE_CHECKING:
    from .explanation import Explanation

__all__ = ["from_shap", "library_view", "to_shap"]


def library_view(exp: Explanation) -> np.ndarray:
    """The maps as their library normalises them; see :meth:`xai_bridge.Explanation.library_view`."""
    from .normalization import normalize

    span = exp.extras.get("layer_range")
    if span is None:
        return np.asarray(normalize(exp.attributions, "minmax"), np.float32)
    lo, hi = span[..., 0, None, None].astype(np.float64), span[..., 1, None, None].astype(np.float64)
    # torchcam's _normalize: (cam - min) / (max + eps) after the subtraction, eps = 1e-8
    return ((exp.attributions - lo) / (hi - lo + 1e-8)).astype(np.float32)


def to_shap(exp: Explanation, channels: bool = True) -> Any:
    """A ``shap.Explanation`` that ``shap.image_plot`` accepts; see :meth:`xai_bridge.Explanation.to_shap`."""
    try:
        import shap
    except ImportError as exc:  # pragma: no cover - exercised without shap
        raise LibraryNotInstalledError("to_shap() needs shap: pip install 'xai-bridge[shap]'") from exc
    if channels:
        if exp.raw is not None and exp.raw.shape[2] == 3:
            values = np.transpose(exp.raw, (0, 3, 4, 2, 1))
        else:
            values = np.repeat(np.transpose(exp.attributions, (0, 2, 3, 1))[:, :, :, None, :] / 3.0, 3, axis=3)
    else:
        values = np.transpose(exp.attributions, (0, 2, 3, 1))[:, :, :, None, :]
    base = exp.base_scores if exp.base_scores is not None else np.zeros(exp.targets.shape, np.float32)
    return shap.Explanation(
        values=np.ascontiguousarray(values, dtype=np.float32),
        base_values=np.array(base, dtype=np.float32),
        data=exp.images.astype(np.float32) / 255.0,
        output_names=np.array(exp.target_names, dtype=object),
    )


def from_shap(
    cls: type[Explanation],
    shap_explanation: Any,
    images: np.ndarray | None = None,
    targets: Sequence[Sequence[int]] | np.ndarray | None = None,
    method: str = "shap.Partition",
    scores: np.ndarray | None = None,
    **provenance: Any,
) -> Explanation:
    """Build a ``cls`` from a ``shap.Explanation`` of images; see :meth:`xai_bridge.Explanation.from_shap`."""
    values = np.asarray(shap_explanation.values, dtype=np.float32)
    if values.ndim == 4:
        values = values[..., None]
    if values.ndim != 5:
        raise ParameterError(f"shap_explanation: expected values of shape (N, H, W, C, T), got {values.shape}")
    raw = np.transpose(values, (0, 4, 3, 1, 2))
    n, t = raw.shape[:2]
    if images is None:
        data = np.asarray(shap_explanation.data, dtype=np.float64)
        if data.max() <= 1.0:
            data = data * 255.0
        images = np.clip(np.rint(data), 0, 255).astype(np.uint8)
    if targets is None:
        targets = np.tile(np.arange(t), (n, 1))
    names = shap_explanation.output_names
    if names is None:
        target_names = np.asarray(targets).astype(str)
    else:
        names_arr = np.asarray(names, dtype=str)
        target_names = np.broadcast_to(names_arr, (n, t)) if names_arr.ndim <= 1 else names_arr
    base = shap_explanation.base_values
    base_scores = None if base is None else np.broadcast_to(np.asarray(base, np.float32).reshape(n, -1), (n, t))
    return cls(
        attributions=raw.sum(axis=2),
        raw=raw if raw.shape[2] > 1 else None,
        images=images,
        targets=np.asarray(targets),
        target_names=target_names,
        scores=np.full((n, t), np.nan, np.float32) if scores is None else scores,
        base_scores=base_scores,
        method=method,
        library=provenance.pop("library", provenance.pop("backend", "shap")),
        **provenance,
    )
