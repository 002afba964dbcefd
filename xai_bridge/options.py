"""Public option types of the methods, each with one ``ensure()`` that coerces what users pass.

``NoiseTunnel`` (captum's SmoothGrad / VarGrad wrapper), ``Segmentation``
(superpixels for LIME and captum's superpixel methods) and ``ImageMasker``
(shap's Partition masker) are small frozen dataclasses: a method accepts the
object or the short forms its library's users write (``"smoothgrad"``,
``"slic"``, ``"blur(128,128)"``), and ``ensure`` turns either into the object
or raises a :class:`~xai_bridge.errors.ParameterError` naming the parameter.
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._validate import int_at_least
from .errors import ParameterError

__all__ = [
    "DEFAULT_SEGMENTATION",
    "ImageMasker",
    "MaskKind",
    "NoiseKind",
    "NoiseTunnel",
    "Segmentation",
    "SegmentationKind",
    "relabel",
]


class NoiseKind(str, enum.Enum):
    """How NoiseTunnel combines the noisy samples' attributions."""

    SMOOTHGRAD = "smoothgrad"
    SMOOTHGRAD_SQ = "smoothgrad_sq"
    VARGRAD = "vargrad"


@dataclass(frozen=True)
class NoiseTunnel:
    """captum's NoiseTunnel around a gradient method: SmoothGrad, SmoothGrad squared or VarGrad.

    SmoothGrad: Smilkov et al. 2017, https://arxiv.org/abs/1706.03825; VarGrad:
    Adebayo et al. 2018, https://arxiv.org/abs/1810.03307.

    Args:
        kind: ``"smoothgrad"``, ``"smoothgrad_sq"`` or ``"vargrad"``.
        nt_samples: noisy samples per image.
        stdevs: standard deviation of the Gaussian noise in PIXEL units (the
            0-255 scale of the images), e.g. 25.5 is 10% of the range.
        nt_samples_batch_size: noisy samples per forward pass (None: all at once).
    """

    kind: NoiseKind | str = NoiseKind.SMOOTHGRAD
    nt_samples: int = 10
    stdevs: float = 25.5
    nt_samples_batch_size: int | None = None

    def __post_init__(self) -> None:
        try:
            kind = NoiseKind(getattr(self.kind, "value", self.kind))
        except ValueError:
            raise ParameterError(
                f"noise_tunnel.kind: expected one of {[k.value for k in NoiseKind]}, got {self.kind!r}"
            ) from None
        object.__setattr__(self, "kind", kind)
        int_at_least("noise_tunnel.nt_samples", self.nt_samples, 1)
        if self.nt_samples_batch_size is not None:
            int_at_least("noise_tunnel.nt_samples_batch_size", self.nt_samples_batch_size, 1)
        if isinstance(self.stdevs, bool) or not isinstance(self.stdevs, (int, float)) or self.stdevs < 0:
            raise ParameterError(
                f"noise_tunnel.stdevs: expected a non-negative number (pixel units), got {self.stdevs!r}"
            )

    def describe(self) -> dict[str, Any]:
        """JSON-able description."""
        return {**asdict(self), "kind": NoiseKind(self.kind).value}

    @classmethod
    def ensure(cls, value: Any, name: str = "noise_tunnel") -> NoiseTunnel | None:
        """None, a NoiseTunnel, a kind name (``"smoothgrad"``) or a dict of its fields, as a NoiseTunnel."""
        if value is None or isinstance(value, NoiseTunnel):
            return value
        if isinstance(value, (str, NoiseKind)):
            return cls(kind=value)
        if isinstance(value, Mapping):
            valid = {"kind", "nt_samples", "stdevs", "nt_samples_batch_size"}
            unknown = sorted(set(value) - valid)
            if unknown:
                raise ParameterError(f"{name}: unknown field(s) {unknown}; valid ones are {sorted(valid)}")
            return cls(**value)
        raise ParameterError(
            f"{name}: expected None, a NoiseTunnel, a kind name or a dict of its fields, got {type(value).__name__}"
        )


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
            raise ParameterError(
                f"segmentation.kind: unknown segmentation {self.kind!r}; expected one of {[k.value for k in SegmentationKind]}"
            ) from None
        if not isinstance(self.params, Mapping):
            raise ParameterError(f"params: expected a mapping of keyword arguments, got {type(self.params).__name__}")
        object.__setattr__(self, "kind", kind.value)
        object.__setattr__(self, "params", dict(self.params))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Labels ``(H, W)`` int32 numbered ``0 .. S-1`` for a uint8 ``(H, W, 3)`` image."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ParameterError(f"image: expected an (H, W, 3) image, got shape {img.shape}")
        return relabel(self.function()(img, **self.params), img.shape[:2])

    def function(self) -> Any:
        """The scikit-image function, after checking the parameter names against its signature."""
        import skimage.segmentation

        fn = getattr(skimage.segmentation, str(self.kind))
        valid = set(inspect.signature(fn).parameters) - {"image"}
        unknown = sorted(set(self.params) - valid)
        if unknown:
            raise ParameterError(
                f"segmentation.params: unknown {self.kind} parameter(s) {unknown}; valid ones are {sorted(valid)}"
            )
        return fn

    @classmethod
    def ensure(
        cls,
        spec: Any,
        default: Segmentation | None = None,
        kind_defaults: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Segmentation | Any:
        """A ``segmentation=`` value as a Segmentation, or the user's own callable unchanged.

        Args:
            spec: None (``default``), a Segmentation, a kind name (with
                ``kind_defaults[kind]`` as its parameters), a dict
                ``{"kind": ..., "params": ...}`` or a callable mapping a uint8
                HWC image to labels.
            default: what None means (:data:`DEFAULT_SEGMENTATION` if not given).
            kind_defaults: parameters a bare kind name gets (scikit-image's own
                defaults if not given); lime's are not scikit-image's.
        """
        if spec is None:
            return default if default is not None else DEFAULT_SEGMENTATION
        if isinstance(spec, (str, SegmentationKind)):
            kind = str(getattr(spec, "value", spec))
            return cls(kind, dict((kind_defaults or {}).get(kind, {})))
        if isinstance(spec, Mapping):
            unknown = sorted(set(spec) - {"kind", "params"})
            if unknown:
                raise ParameterError(f"segmentation: unknown key(s) {unknown}; expected 'kind' and 'params'")
            return cls(spec.get("kind", "slic"), spec.get("params", {}))
        if isinstance(spec, Segmentation) or callable(spec):
            return spec
        if hasattr(spec, "kind") and hasattr(spec, "params"):  # a look-alike, e.g. from an older release
            return cls(getattr(spec.kind, "value", spec.kind), dict(spec.params))
        raise ParameterError(
            f"segmentation: expected a Segmentation, a kind name, a dict or a callable, got {type(spec).__name__}"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-able description, for an Explanation's params."""
        return {"kind": str(self.kind), "params": dict(self.params)}


#: The default superpixels of the superpixel methods.
DEFAULT_SEGMENTATION = Segmentation("slic", {"n_segments": 50, "compactness": 10})


def relabel(labels: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Renumber labels to ``0 .. S-1`` (int32), checking the shape."""
    seg = np.asarray(labels)
    if seg.shape != tuple(shape):
        raise ParameterError(f"segmentation: expected labels of shape {tuple(shape)}, got {seg.shape}")
    _, inverse = np.unique(seg, return_inverse=True)
    return inverse.reshape(seg.shape).astype(np.int32)


class MaskKind(str, enum.Enum):
    """How shap's image masker hides a region."""

    INPAINT_TELEA = "inpaint_telea"  # OpenCV Telea inpainting
    INPAINT_NS = "inpaint_ns"  # OpenCV Navier-Stokes inpainting
    BLUR = "blur"  # box blur of the whole image (cv2.blur)
    CONSTANT = "constant"  # a fixed colour


@dataclass(frozen=True)
class ImageMasker:
    """A shap image masker option.

    Attributes:
        kind: the masking technique.
        blur_kernel: ``(x size, y size)`` of the box blur, as in shap's
            ``"blur(kx,ky)"`` (``BLUR`` only).
        value: fill colour in pixel units 0-255, a number or an RGB triple
            (``CONSTANT`` only).
    """

    kind: MaskKind = MaskKind.INPAINT_TELEA
    blur_kernel: tuple[int, int] = (128, 128)
    value: float | tuple[float, float, float] = 0.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", MaskKind(self.kind))
        except ValueError:
            raise ParameterError(
                f"masker: unknown kind {self.kind!r}; expected one of {[k.value for k in MaskKind]}"
            ) from None
        kernel = tuple(int(k) for k in np.broadcast_to(np.asarray(self.blur_kernel), (2,)))
        if min(kernel) < 1:
            raise ParameterError(f"masker.blur_kernel: expected two sizes >= 1, got {self.blur_kernel}")
        object.__setattr__(self, "blur_kernel", kernel)
        value = np.asarray(self.value, dtype=np.float64)
        if value.shape not in ((), (3,)) or value.min() < 0 or value.max() > 255:
            raise ParameterError(f"masker.value: expected a number or RGB triple in 0..255, got {self.value!r}")
        object.__setattr__(self, "value", float(value) if value.ndim == 0 else tuple(float(v) for v in value))

    @classmethod
    def blur(cls, kx: int, ky: int | None = None) -> ImageMasker:
        """A box-blur masker, shap's ``"blur(kx,ky)"``."""
        return cls(MaskKind.BLUR, blur_kernel=(kx, kx if ky is None else ky))

    @classmethod
    def ensure(cls, spec: ImageMasker | MaskKind | str) -> ImageMasker:
        """A ``masker=`` value as an ImageMasker (see :meth:`parse`)."""
        return cls.parse(spec)

    @classmethod
    def parse(cls, spec: ImageMasker | MaskKind | str) -> ImageMasker:
        """Accept an ImageMasker, a :class:`MaskKind` or shap's string.

        shap's strings are ``"inpaint_telea"``, ``"inpaint_ns"`` and
        ``"blur(kx,ky)"``.
        """
        if isinstance(spec, ImageMasker):
            return spec
        if isinstance(spec, MaskKind):
            return cls(spec)
        if isinstance(spec, str):
            match = re.fullmatch(r"\s*blur\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*", spec)
            if match:
                return cls.blur(int(match.group(1)), int(match.group(2)))
            if spec in (MaskKind.INPAINT_TELEA.value, MaskKind.INPAINT_NS.value):
                return cls(MaskKind(spec))
        raise ParameterError(
            f"masker: expected an ImageMasker, a MaskKind or one of 'inpaint_telea', 'inpaint_ns', "
            f"'blur(kx,ky)', got {spec!r}"
        )

    def shap_mask_value(self, shape: tuple[int, int, int]) -> str | np.ndarray:
        """The ``mask_value`` argument of ``shap.maskers.Image`` for images of ``shape``."""
        if self.kind is MaskKind.BLUR:
            return f"blur({self.blur_kernel[0]},{self.blur_kernel[1]})"
        if self.kind is MaskKind.CONSTANT:
            return np.broadcast_to(np.asarray(self.value, np.float64), shape).copy()
        return self.kind.value
