"""Images encoded in memory for an API, fitted to what it accepts (size, bytes, formats).

No temporary files: an image is encoded to bytes once per request, resized
(aspect ratio kept) when outside the API's limits, and re-encoded in a more
compact format or shrunk when its file is too large.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from xai_bridge.errors import ParameterError

__all__ = ["EncodedImage", "ImageLimits", "encode_image"]


@dataclass(frozen=True)
class ImageLimits:
    """What an API accepts.

    Attributes:
        max_bytes: largest encoded file (None: no limit).
        min_side: smallest width/height in pixels.
        max_side: largest width/height (None: no limit).
        formats: accepted Pillow format names.
    """

    max_bytes: int | None = None
    min_side: int = 1
    max_side: int | None = None
    formats: tuple[str, ...] = ("PNG", "JPEG")


_MIME = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
}


@dataclass(frozen=True)
class EncodedImage:
    """An image encoded for sending.

    Attributes:
        data: the file bytes.
        content_type: MIME type.
        sha256: hex digest of ``data`` (the cache key's image part).
        size: ``(height, width)`` as sent.
    """

    data: bytes = field(repr=False)
    content_type: str
    sha256: str
    size: tuple[int, int]


_UNCOMPRESSED = ("BMP", "TIFF")


def _check_format(image_format: str, limits: ImageLimits) -> str:
    fmt = str(image_format).upper().replace("JPG", "JPEG")
    if fmt not in limits.formats:
        raise ParameterError(
            f"image_format: {image_format!r} is not accepted by this API; use one of {list(limits.formats)}"
        )
    return fmt


def _encode(img: Image.Image, fmt: str, jpeg_quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=jpeg_quality)
    else:
        img.save(buf, format=fmt, compress_level=1) if fmt == "PNG" else img.save(buf, format=fmt)
    return buf.getvalue()


def encode_image(
    image: np.ndarray,
    limits: ImageLimits = ImageLimits(),
    image_format: str = "PNG",
    fit: bool = True,
    jpeg_quality: int = 95,
) -> EncodedImage:
    """Encode a uint8 ``(H, W, 3)`` image in memory, fitted to ``limits``.

    Too small images are enlarged and too large ones shrunk, keeping the
    aspect ratio (as seed 000 does); a file over ``max_bytes`` is re-encoded
    (an uncompressed one as PNG first, then as JPEG when allowed) and then shrunk until it fits.

    Args:
        image: the image.
        limits: what the API accepts.
        image_format: ``"PNG"`` (lossless, default) or another Pillow format in ``limits.formats``.
        fit: resize to fit; when False an image outside the limits raises.
        jpeg_quality: quality of JPEG encoding.

    Returns:
        The :class:`EncodedImage`.
    """
    fmt = _check_format(image_format, limits)
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ParameterError(f"images: expected uint8 (H, W, 3) RGB, got {arr.dtype} {arr.shape}")
    h, w = arr.shape[:2]
    scale = 1.0
    if min(h, w) < limits.min_side:
        scale = limits.min_side / min(h, w)
    if limits.max_side is not None and max(h, w) * scale > limits.max_side:
        scale = limits.max_side / max(h, w)
        if min(h, w) * scale < limits.min_side:
            raise ParameterError(
                f"images: a {w}x{h} image cannot fit between {limits.min_side} and {limits.max_side} "
                f"pixels per side with its aspect ratio kept"
            )
    img = Image.fromarray(arr)
    if scale != 1.0:
        if not fit:
            raise ParameterError(
                f"images: {w}x{h} is outside the API's limits ({limits.min_side}.."
                f"{limits.max_side or 'any'} pixels per side); pass fit_images=True to resize"
            )
        rounding = math.ceil if scale > 1 else round
        size = (max(limits.min_side, int(rounding(w * scale))), max(limits.min_side, int(rounding(h * scale))))
        img = img.resize(size, Image.Resampling.BICUBIC)
    data = _encode(img, fmt, jpeg_quality)
    if limits.max_bytes is not None and len(data) > limits.max_bytes:
        img, fmt, data = _fit_bytes(img, fmt, data, limits, fit, jpeg_quality)
    return EncodedImage(
        data=data,
        content_type=_MIME.get(fmt, "application/octet-stream"),
        sha256=hashlib.sha256(data).hexdigest(),
        size=(img.height, img.width),
    )


def _fit_bytes(
    img: Image.Image, fmt: str, data: bytes, limits: ImageLimits, fit: bool, jpeg_quality: int
) -> tuple[Image.Image, str, bytes]:
    """Re-encode a file over ``limits.max_bytes``: an uncompressed one as PNG, then as JPEG when allowed, then shrink."""
    assert limits.max_bytes is not None
    while len(data) > limits.max_bytes:
        if not fit:
            raise ParameterError(f"images: encoded image is {len(data)} bytes, over the API's {limits.max_bytes}")
        if fmt in _UNCOMPRESSED and "PNG" in limits.formats:
            fmt = "PNG"  # still lossless, and far smaller
        elif fmt != "JPEG" and "JPEG" in limits.formats:
            fmt = "JPEG"
        else:
            shrink = math.sqrt(limits.max_bytes / len(data)) * 0.95
            size = (int(img.width * shrink), int(img.height * shrink))
            if min(size) < limits.min_side:
                raise ParameterError(f"images: cannot encode under {limits.max_bytes} bytes at >= {limits.min_side} px")
            img = img.resize(size, Image.Resampling.BICUBIC)
        data = _encode(img, fmt, jpeg_quality)
    return img, fmt, data
