"""Turn any image input into uint8 RGB ``(N, H, W, 3)`` arrays.

Accepted: paths (str or ``os.PathLike``), ``PIL.Image.Image``, numpy arrays and
torch tensors, single or batched, in layouts ``HW``, ``HWC``, ``CHW``, ``NHW``,
``NHWC`` and ``NCHW``; or a list of any of these. Gray, RGBA, palette, 16-bit,
CMYK and EXIF-rotated files all become RGB. Inputs are never mutated.
"""

from __future__ import annotations

import enum
import os
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageInputError

__all__ = ["DEFAULT_MAX_PIXELS", "Layout", "load_image", "load_images"]

#: Largest image (in pixels) read by default: Pillow's own bomb threshold.
DEFAULT_MAX_PIXELS: int = int(Image.MAX_IMAGE_PIXELS or 89_478_485)

_CHANNELS = (1, 3, 4)


class Layout(str, enum.Enum):
    """Axis order of an array or tensor image."""

    HW = "HW"
    HWC = "HWC"
    CHW = "CHW"
    NHW = "NHW"
    NHWC = "NHWC"
    NCHW = "NCHW"


def load_images(
    images: Any,
    layout: Layout | str | None = None,
    size: tuple[int, int] | None = None,
    value_range: tuple[float, float] | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Load one image or a batch as uint8 RGB ``(N, H, W, 3)``.

    Args:
        images: a path, PIL image, array or tensor (single or batched), or a
            list/tuple of those.
        layout: axis order of array/tensor inputs; inferred when omitted and
            required when the shape is ambiguous (e.g. ``3x3x3``).
        size: ``(height, width)`` to resize every image to (bilinear); needed
            when a list holds images of different sizes.
        value_range: ``(low, high)`` of float inputs. Inferred as ``(0, 1)``
            when all values lie there, ``(0, 255)`` when they lie there; else
            required (e.g. ``(-1, 1)`` for Inception-style inputs).
        background: RGB colour transparent pixels are composited onto.
        max_pixels: largest accepted image, guarding against decompression bombs.

    Returns:
        A new uint8 array of shape ``(N, H, W, 3)``.

    Raises:
        ImageInputError: the input cannot be read or interpreted; the message
            names the file or argument and the fix.
    """
    return _load_images(images, layout, size, value_range, background, max_pixels)


#: What :func:`load_images` tells a caller with images of different sizes; other callers name their own fix.
RESIZE_FIX = "pass size=(height, width) to resize them"


def _load_images(
    images: Any,
    layout: Layout | str | None = None,
    size: tuple[int, int] | None = None,
    value_range: tuple[float, float] | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fix: str = RESIZE_FIX,
) -> np.ndarray:
    """:func:`load_images`, with ``fix`` the advice given for images of different sizes.

    ``explain()`` and the command line take no ``size=`` argument, so they
    cannot give :func:`load_images`' own advice.
    """
    try:
        layout = Layout(layout) if layout is not None else None
    except ValueError:
        raise ImageInputError(f"layout: expected one of {[m.value for m in Layout]}, got {layout!r}") from None
    if value_range is not None:
        value_range = _check_range(value_range)
    if size is not None:
        size = _check_size(size)
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ImageInputError("images: got an empty list; pass at least one image")
        parts = [_to_batch(item, layout, value_range, background, max_pixels) for item in images]
    else:
        parts = [_to_batch(images, layout, value_range, background, max_pixels)]
    if size is not None:
        parts = [_resize_batch(p, size) for p in parts]
    shapes = {p.shape[1:3] for p in parts}
    if len(shapes) > 1:
        raise ImageInputError(f"images: got images of different sizes {sorted(shapes)}; {fix}")
    return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]


def _check_range(value_range: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ImageInputError(f"value_range: expected (low, high) numbers, got {value_range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ImageInputError(f"value_range: expected finite low < high, got {value_range!r}")
    return low, high


def load_image(image: Any, **kwargs: Any) -> np.ndarray:
    """Load a single image as uint8 RGB ``(H, W, 3)``; see :func:`load_images`."""
    batch = load_images(image, **kwargs)
    if batch.shape[0] != 1:
        raise ImageInputError(f"image: expected one image, got a batch of {batch.shape[0]}")
    return batch[0]


def _to_batch(
    item: Any,
    layout: Layout | None,
    value_range: tuple[float, float] | None,
    background: tuple[int, int, int],
    max_pixels: int,
) -> np.ndarray:
    if isinstance(item, (str, os.PathLike)):
        text = os.fspath(item)
        if isinstance(text, str) and _URL.match(text):
            raise ImageInputError(
                f"images: {text!r} is a URL; xai-bridge never downloads: save the image and pass a local file"
            )
        return _read_file(Path(text), background, max_pixels, value_range)[None]
    if isinstance(item, Image.Image):
        return _from_pil(item, background, f"PIL image {item!r}", value_range)[None]
    if type(item).__module__.startswith("torch") and hasattr(item, "detach"):
        return _from_array(_torch_to_numpy(item), layout, value_range, "tensor")
    if isinstance(item, np.ndarray):
        return _from_array(item, layout, value_range)
    raise ImageInputError(
        f"images: unsupported type {type(item).__name__}; pass a path, PIL image, numpy array or torch tensor"
    )


#: ``scheme://`` at the start of a string: a URL (``C:\\x`` on Windows has one letter and no ``//``).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    """A copy of ``tensor`` as numpy; bfloat16 and float16 become float32, which holds them exactly."""
    t = tensor.detach()
    if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
        t = t.float()
    if t.is_complex():
        raise ImageInputError(f"images: got a complex tensor ({t.dtype}); pass real pixel values (e.g. x.abs())")
    try:
        return np.array(t.cpu().numpy(), copy=True)
    except (TypeError, RuntimeError) as exc:
        raise ImageInputError(
            f"images: a tensor of dtype {t.dtype} cannot become a numpy array ({exc}); convert it with .float()"
        ) from None


def _read_file(
    path: Path, background: tuple[int, int, int], max_pixels: int, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    if path.is_dir():
        raise ImageInputError(
            f"images: {str(path)!r} is a directory; pass the image files in it "
            "(xai_bridge.images.iter_image_files(['folder']) lists them) or use explain_dataset for a folder"
        )
    if not path.is_file():
        raise ImageInputError(f"images: file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise ImageInputError(f"images: file {str(path)!r} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with pil_open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageInputError(
                        f"images: file {str(path)!r} is {w}x{h} = {w * h} pixels, over max_pixels={max_pixels} "
                        "(possible decompression bomb); raise max_pixels if you trust the file"
                    )
                img.load()
                return _from_pil(img, background, f"file {str(path)!r}", value_range)
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(
            f"images: file {str(path)!r} is too large (possible decompression bomb): {exc}; "
            "raise max_pixels if you trust the file"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageInputError(f"images: file {str(path)!r} is not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"images: file {str(path)!r} is truncated or corrupt: {exc}") from exc


def pil_open(path: Path | str) -> Image.Image:
    """Pillow's own ``Image.open``, also after another library replaced it.

    ultralytics (imported with a YOLO model) swaps ``PIL.Image.open`` for a
    wrapper that, on any file Pillow cannot identify, tries to pip-install a
    HEIF plugin and raises ``ModuleNotFoundError`` where it cannot: a text
    file among the user's images would reach the network, or end in a
    traceback instead of this module's one line. The wrapper keeps Pillow's
    function as ``_image_open`` in its module; that one is used when present.
    """
    opener: Any = Image.open
    if getattr(opener, "__module__", Image.__name__) != Image.__name__:
        opener = getattr(sys.modules.get(opener.__module__), "_image_open", opener)
    return opener(path)  # type: ignore[no-any-return]


def _from_pil(
    img: Image.Image, background: tuple[int, int, int], what: str, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``; ``value_range`` is the range of the stored values (e.g. a float TIFF's)."""
    if img.width == 0 or img.height == 0:
        raise ImageInputError(f"images: {what} has zero size {img.size}")
    img = ImageOps.exif_transpose(img)  # returns a copy; the caller's image is untouched
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I") and value_range is None:
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("F", "I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        return _from_array(arr, Layout.HW, value_range, what)[0]
    if value_range is not None:  # 8-bit modes: the range applies to the RGB values
        return _from_array(_from_pil(img, background, what), Layout.HWC, value_range, what)[0]
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode in ("LA", "PA"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        base = Image.new("RGB", img.size, tuple(background))
        base.paste(img, mask=img.getchannel("A"))
        img = base
    elif img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def _infer_layout(shape: tuple[int, ...]) -> Layout:
    if len(shape) == 2:
        return Layout.HW
    if len(shape) == 3:
        first, last = shape[0] in _CHANNELS, shape[-1] in _CHANNELS
        if last and not first:
            return Layout.HWC
        if first and not last:
            return Layout.CHW
        if not first and not last:
            _refuse_channels_in_the_middle(shape)
            return Layout.NHW
    if len(shape) == 4:
        second, last = shape[1] in _CHANNELS, shape[-1] in _CHANNELS
        if last and not second:
            return Layout.NHWC
        if second and not last:
            return Layout.NCHW
    raise ImageInputError(
        f"images: the layout of an array of shape {shape} is ambiguous; pass layout= one of "
        f"{[m.value for m in Layout if len(m.value) == len(shape)]}"
    )


#: Outer axes at least this long around a middle axis of 1, 3 or 4 make "gray images" an implausible reading.
_LARGE = 8


def _refuse_channels_in_the_middle(shape: tuple[int, ...]) -> None:
    """Refuse ``(H, C, W)``-like shapes: read as ``NHW`` they would be images 1, 3 or 4 pixels high.

    ``np.zeros((224, 3, 224))`` is far more likely a transposed colour image
    than 224 gray images of 3x224 pixels, so it needs ``layout=`` to say which.
    """
    n, middle, width = shape
    if middle in _CHANNELS and n >= _LARGE and width >= _LARGE:
        raise ImageInputError(
            f"images: an array of shape {shape} would be read as {n} gray images of {middle}x{width} pixels, but its "
            f"middle axis looks like colour channels; pass layout='NHW' if they are gray images, or put the channels "
            f"last (np.moveaxis(images, 1, -1)) for one {n}x{width} colour image"
        )


def _from_array(
    arr: np.ndarray, layout: Layout | None, value_range: tuple[float, float] | None, what: str = "array"
) -> np.ndarray:
    arr = _numeric(arr, what)
    if arr.size == 0:
        raise ImageInputError(f"images: got an empty array of shape {arr.shape}")
    if arr.ndim not in (2, 3, 4):
        raise ImageInputError(f"images: expected 2 to 4 dimensions, got shape {arr.shape}")
    layout = layout or _infer_layout(arr.shape)
    if len(layout.value) != arr.ndim:
        raise ImageInputError(f"images: layout={layout.value!r} does not fit an array of shape {arr.shape}")
    perm = {
        Layout.HW: None,
        Layout.HWC: None,
        Layout.CHW: (1, 2, 0),
        Layout.NHW: None,
        Layout.NHWC: None,
        Layout.NCHW: (0, 2, 3, 1),
    }[layout]
    if perm is not None:
        arr = np.transpose(arr, perm)
    if layout in (Layout.HW, Layout.NHW):
        arr = arr[..., None]
    if layout in (Layout.HW, Layout.HWC, Layout.CHW):
        arr = arr[None]
    channels = arr.shape[-1]
    if channels not in _CHANNELS:
        raise ImageInputError(f"images: expected 1, 3 or 4 channels, got {channels} (shape {arr.shape}); check layout=")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ImageInputError(f"images: zero-size image of shape {arr.shape}")
    out = _to_uint8(arr, value_range, what)
    if channels == 1:
        out = np.repeat(out, 3, axis=-1)
    elif channels == 4:
        out = out[..., :3].copy()
    return np.ascontiguousarray(out)


def _numeric(arr: np.ndarray, what: str) -> np.ndarray:
    """``arr`` if it holds real numbers; other dtypes are refused instead of losing data on a cast."""
    kind = arr.dtype.kind
    if kind in "biuf":
        return arr
    if kind == "c":
        raise ImageInputError(
            f"images: {what} holds complex values ({arr.dtype}); pass real pixel values (e.g. np.abs(x) or x.real)"
        )
    if kind == "V" and "float" in arr.dtype.name:  # bfloat16 / float8 of ml_dtypes: exact in float32
        return arr.astype(np.float32)
    hint = " (e.g. a list of images of different sizes)" if kind == "O" else ""
    raise ImageInputError(f"images: {what} has dtype {arr.dtype}{hint}; pass numbers, e.g. a uint8 or float array")


def _to_uint8(arr: np.ndarray, value_range: tuple[float, float] | None, what: str = "array") -> np.ndarray:
    if value_range is None and arr.dtype == np.uint8:
        return arr.copy()
    if value_range is None and arr.dtype == np.uint16:
        return np.rint(arr.astype(np.float64) / 257.0).astype(np.uint8)
    if value_range is None and arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    data = arr.astype(np.float64)
    if not np.isfinite(data).all():
        raise ImageInputError(f"images: {what} contains NaN or infinite values; replace them (np.nan_to_num)")
    if value_range is None:
        lo, hi = float(data.min()), float(data.max())
        if lo >= 0.0 and hi <= 1.0 and arr.dtype.kind == "f":
            value_range = (0.0, 1.0)
        elif lo >= 0.0 and hi <= 255.0:
            value_range = (0.0, 255.0)
        else:
            raise ImageInputError(
                f"images: {what} has values spanning [{lo:.3g}, {hi:.3g}]; pass value_range=(low, high), e.g. (-1, 1)"
            )
    low, high = map(float, value_range)
    if not high > low:
        raise ImageInputError(f"value_range: expected low < high, got {value_range}")
    scaled = (data - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _check_size(size: Any) -> tuple[int, int]:
    try:
        h, w = size
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (h, w))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ImageInputError(f"size: expected positive integers (height, width), got {size!r}")
    return int(h), int(w)


def _resize_batch(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = _check_size(size)
    if batch.shape[1:3] == (h, w):
        return batch
    return np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.Resampling.BILINEAR)) for im in batch])


def iter_image_files(paths: Iterable[str | os.PathLike[str]]) -> Sequence[Path]:
    """Expand folders into the sorted image files they hold (by extension)."""
    exts = {e.lower() for e, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in exts))
        else:
            out.append(p)
    return out
