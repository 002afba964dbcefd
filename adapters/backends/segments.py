"""Superpixel segmentation for superpixel attribution methods.

A :class:`Segmentation` names a scikit-image algorithm and its parameters and
maps a uint8 ``(H, W, 3)`` image to int32 labels ``(H, W)`` numbered
``0 .. S-1``. Superpixel methods (e.g. ``captum.FeatureAblation``,
``captum.KernelShap``) use it as their feature mask.

Algorithms:
    * ``"quickshift"``: Vedaldi & Soatto 2008, https://doi.org/10.1007/978-3-540-88693-8_52
    * ``"slic"``: Achanta et al. 2012, https://doi.org/10.1109/TPAMI.2012.120
    * ``"felzenszwalb"``: Felzenszwalb & Huttenlocher 2004, https://doi.org/10.1023/B:VISI.0000022288.19776.77
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DEFAULT_SEGMENTATION", "Segmentation", "SegmentationKind", "as_segmenter", "segment_images"]


class SegmentationKind(str, enum.Enum):
    """The scikit-image algorithms available to :class:`Segmentation`."""

    QUICKSHIFT = "quickshift"
    SLIC = "slic"
    FELZENSZWALB = "felzenszwalb"


@dataclass(frozen=True)
class Segmentation:
    """A scikit-image superpixel algorithm with fixed parameters.

    Args:
        kind: ``"quickshift"``, ``"slic"`` or ``"felzenszwalb"``.
        params: keyword arguments of ``skimage.segmentation.<kind>`` (unknown
            names raise, naming the valid ones).

    Example:
        >>> seg = Segmentation("slic", {"n_segments": 50, "compactness": 10})
        >>> labels = seg(image_uint8_hwc)  # int32 (H, W), 0..S-1
    """

    kind: SegmentationKind | str = "slic"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            kind = SegmentationKind(getattr(self.kind, "value", self.kind))
        except ValueError:
            raise ValueError(
                f"kind: unknown segmentation {self.kind!r}; expected one of {[k.value for k in SegmentationKind]}"
            ) from None
        if not isinstance(self.params, Mapping):
            raise TypeError(f"params: expected a mapping of keyword arguments, got {type(self.params).__name__}")
        object.__setattr__(self, "kind", kind.value)
        object.__setattr__(self, "params", dict(self.params))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Labels ``(H, W)`` int32 numbered ``0 .. S-1`` for a uint8 ``(H, W, 3)`` image."""
        import skimage.segmentation

        img = np.asarray(image)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"image: expected an (H, W, 3) image, got shape {img.shape}")
        fn = getattr(skimage.segmentation, str(self.kind))
        valid = set(inspect.signature(fn).parameters) - {"image"}
        unknown = sorted(set(self.params) - valid)
        if unknown:
            raise ValueError(f"params: unknown {self.kind} parameter(s) {unknown}; valid ones are {sorted(valid)}")
        return relabel(fn(img, **self.params), img.shape[:2])

    def describe(self) -> dict[str, Any]:
        """JSON-able description, for an Explanation's params."""
        return {"kind": str(self.kind), "params": dict(self.params)}


#: The default superpixels of the superpixel methods.
DEFAULT_SEGMENTATION = Segmentation("slic", {"n_segments": 50, "compactness": 10})


def relabel(labels: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Renumber labels to ``0 .. S-1`` (int32), checking the shape."""
    seg = np.asarray(labels)
    if seg.shape != tuple(shape):
        raise ValueError(f"segmentation: expected labels of shape {tuple(shape)}, got {seg.shape}")
    _, inverse = np.unique(seg, return_inverse=True)
    return inverse.reshape(seg.shape).astype(np.int32)


def as_segmenter(spec: Any) -> tuple[Callable[[np.ndarray], np.ndarray], Any]:
    """Return ``(fn, description)`` for a ``segmentation=`` parameter.

    Args:
        spec: None (:data:`DEFAULT_SEGMENTATION`), a :class:`Segmentation`, a
            kind name (scikit-image defaults), a dict ``{"kind": ..., "params": ...}``
            or a callable mapping a uint8 HWC image to labels.
    """
    if spec is None:
        spec = DEFAULT_SEGMENTATION
    if isinstance(spec, str):
        spec = Segmentation(spec)
    elif isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"kind", "params"})
        if unknown:
            raise ValueError(f"segmentation: unknown key(s) {unknown}; expected 'kind' and 'params'")
        spec = Segmentation(spec.get("kind", "slic"), spec.get("params", {}))
    if isinstance(spec, Segmentation):
        return spec, spec.describe()
    if callable(spec):
        return spec, repr(spec)
    raise TypeError(
        f"segmentation: expected a Segmentation, a kind name, a dict or a callable, got {type(spec).__name__}"
    )


def segment_images(spec: Any, images: np.ndarray) -> tuple[np.ndarray, Any]:
    """Labels ``(N, H, W)`` int32 (each image numbered from 0) and the description.

    ``spec`` may also be precomputed labels ``(H, W)`` (shared) or ``(N, H, W)``.
    """
    n, h, w = images.shape[:3]
    if isinstance(spec, np.ndarray):
        if spec.shape == (h, w):
            spec = np.broadcast_to(spec, (n, h, w))
        if spec.shape != (n, h, w):
            raise ValueError(f"segmentation: expected labels of shape {(h, w)} or {(n, h, w)}, got {spec.shape}")
        return np.stack([relabel(s, (h, w)) for s in spec]), "precomputed labels"
    fn, desc = as_segmenter(spec)
    return np.stack([relabel(fn(img), (h, w)) for img in images]), desc
