"""How an :class:`~xai_bridge.Explanation` is written to and read from disk.

A saved file is a single ``.npz`` (no pickle) holding the arrays and one JSON
metadata string; :data:`FORMAT_VERSION` is checked on load. Reading checks
every array's declared size before decompressing anything, so a damaged file
or a "zip bomb" is refused with a :class:`~xai_bridge.errors.FormatError`
instead of filling memory.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._files import write_atomic
from .errors import FormatError, ParameterError

if TYPE_CHECKING:
    from .explanation import Explanation

__all__ = ["DEFAULT_MAX_LOAD_BYTES", "FORMAT_NAME", "FORMAT_VERSION", "load_explanation", "save_explanation"]

FORMAT_NAME = "xai-bridge.explanation"
FORMAT_VERSION = 1

#: Largest total decompressed size :meth:`Explanation.load` accepts by default (128 MiB).
DEFAULT_MAX_LOAD_BYTES = 128 * 2**20

#: How many times its size on disk a file larger than ``max_bytes / _MAX_RATIO`` may inflate.
_MAX_RATIO = 32

_REQUIRED_ARRAYS = ("attributions", "images", "targets", "target_names", "scores")

#: Metadata fields and the types they must have (JSON types: int covers bool, so bools are refused apart).
_META_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,),
    "backend": (str,),
    "backend_version": (str,),
    "params": (dict,),
    "seed": (int, type(None)),
    "n_model_evals": (int,),
    "seconds": (int, float),
    "extras": (list,),
}


def _read_npz(path: Path, max_bytes: int | None) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, checking sizes before decompressing anything."""
    if path.is_dir():
        raise FormatError(f"path: {path} is a directory; pass an .npz file written by Explanation.save")
    if not path.is_file():
        raise FormatError(f"path: {path} does not exist")
    on_disk = path.stat().st_size
    if on_disk == 0:
        raise FormatError(f"path: {path} is empty (0 bytes); it is not an Explanation file")
    limit = None if max_bytes is None else max(max_bytes, _MAX_RATIO * on_disk)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            total = sum(info.file_size for info in members)
            if limit is not None and total > limit:
                raise FormatError(
                    f"path: {path} would decompress to {total} bytes from {on_disk} on disk, over the limit of "
                    f"{limit}; if you trust the file, pass max_bytes={total} (or None)"
                )
            return {_array_name(path, info): _read_member(path, archive, info) for info in members}
    except FormatError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        hint = " (a plain .npy file, not an .npz)" if _is_npy(path) else ""
        raise FormatError(f"path: {path} is not a readable .npz file{hint}: {exc}") from None


def _is_npy(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(6) == b"\x93NUMPY"


def _array_name(path: Path, info: zipfile.ZipInfo) -> str:
    if not info.filename.endswith(".npy"):
        raise FormatError(f"path: {path} holds {info.filename!r}, which is not a .npy array; the file is damaged")
    return info.filename[: -len(".npy")]


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member, after checking that its header's shape fits the member's declared size."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise FormatError(f"path: {path}: array {info.filename!r} has .npy version {version}; expected 1.0 or 2.0")
        if dtype.hasobject:
            raise FormatError(f"path: {path}: array {info.filename!r} holds Python objects, which are never loaded")
        nbytes = math.prod(shape) * dtype.itemsize
        if f.tell() + nbytes != info.file_size:
            raise FormatError(
                f"path: {path}: array {info.filename!r} declares shape {shape} ({nbytes} bytes) but holds "
                f"{info.file_size - f.tell()}; the file is damaged"
            )
        data = f.read(nbytes)  # the CRC is checked when the member is read to its end
        if len(data) != nbytes or f.read(1):
            raise FormatError(f"path: {path}: array {info.filename!r} is truncated; the file is damaged")
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C")


def _read_meta(path: Path, raw: np.ndarray | None) -> dict[str, Any]:
    """The checked JSON metadata of a saved Explanation."""
    if raw is None:
        raise FormatError(f"path: {path} has no xai-bridge metadata; it is not an Explanation file")
    if raw.shape != () or raw.dtype.kind != "U":
        raise FormatError(f"path: {path}: the metadata is not one string (got {raw.dtype} {raw.shape}); damaged")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise FormatError(f"path: {path}: the metadata is not valid JSON ({exc}); the file is damaged") from None
    if not isinstance(meta, dict):
        raise FormatError(f"path: {path}: the metadata is a JSON {type(meta).__name__}, not an object; damaged")
    if meta.get("format") != FORMAT_NAME:
        raise FormatError(f"path: {path} is not an xai-bridge Explanation (format {meta.get('format')!r})")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise FormatError(
            f"path: {path} has format version {version!r}; expected an integer 1..{FORMAT_VERSION}: "
            "the metadata was edited or damaged"
        )
    if version > FORMAT_VERSION:
        raise FormatError(
            f"path: {path} has format version {version}; this xai-bridge reads up to {FORMAT_VERSION}: "
            "upgrade xai-bridge"
        )
    for key, types in _META_TYPES.items():
        value = meta.get(key, ...)
        if value is ... or isinstance(value, bool) or not isinstance(value, types):
            shown = "missing" if value is ... else f"{value!r:.60}"
            raise FormatError(
                f"path: {path}: metadata field {key!r} is {shown}, expected {' or '.join(t.__name__ for t in types)}; "
                "the metadata was edited or damaged"
            )
    if not all(isinstance(k, str) for k in meta["extras"]):
        raise FormatError(f"path: {path}: metadata field 'extras' must list names; the metadata was edited or damaged")
    if meta["n_model_evals"] < 0 or meta["seconds"] < 0 or (meta["seed"] is not None and meta["seed"] < 0):
        raise FormatError(f"path: {path}: negative seed, n_model_evals or seconds; the metadata was edited or damaged")
    return meta


def save_explanation(exp: Explanation, path: str | os.PathLike[str]) -> Path:
    """Write ``exp`` to ``path`` atomically; see :meth:`Explanation.save <xai_bridge.Explanation.save>`."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays: dict[str, np.ndarray] = {
        "attributions": exp.attributions,
        "images": exp.images,
        "targets": exp.targets,
        "target_names": exp.target_names,
        "scores": exp.scores,
    }
    if exp.raw is not None:
        arrays["raw"] = exp.raw
    if exp.base_scores is not None:
        arrays["base_scores"] = exp.base_scores
    for key, value in exp.extras.items():
        arrays[f"extras/{key}"] = value
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "method": exp.method,
        "backend": exp.library,  # the file format's key names predate the library / backend split
        "backend_version": exp.library_version,
        "params": dict(exp.params),
        "seed": exp.seed,
        "n_model_evals": exp.n_model_evals,
        "seconds": exp.seconds,
        "extras": sorted(exp.extras),
    }
    arrays["__meta__"] = np.array(json.dumps(meta, sort_keys=True))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy stubs type **kwds as allow_pickle
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buf.getvalue())
    return path


def load_explanation(
    cls: type[Explanation], path: str | os.PathLike[str], max_bytes: int | None = DEFAULT_MAX_LOAD_BYTES
) -> Explanation:
    """Read the ``cls`` saved at ``path``; see :meth:`Explanation.load <xai_bridge.Explanation.load>`."""
    path = Path(path)
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
        raise ParameterError(f"max_bytes: expected None or an integer >= 0, got {max_bytes!r}")
    data = _read_npz(path, max_bytes)
    meta = _read_meta(path, data.pop("__meta__", None))
    try:
        extras = {k: data[f"extras/{k}"] for k in meta["extras"]}
        missing = [k for k in _REQUIRED_ARRAYS if k not in data]
        if missing:
            raise FormatError(f"path: {path} lacks the array(s) {missing}; the file is damaged")
        return cls(
            attributions=data["attributions"],
            images=data["images"],
            targets=data["targets"],
            target_names=data["target_names"],
            scores=data["scores"],
            raw=data.get("raw"),
            base_scores=data.get("base_scores"),
            extras=extras,
            method=meta["method"],
            library=meta["backend"],
            library_version=meta["backend_version"],
            params=meta["params"],
            seed=meta["seed"],
            n_model_evals=meta["n_model_evals"],
            seconds=meta["seconds"],
        )
    except FormatError:
        raise
    except KeyError as exc:
        raise FormatError(f"path: {path} lacks the array {exc}; the file is damaged") from None
    except (ValueError, TypeError) as exc:  # the arrays disagree with each other (shapes, dtypes)
        raise FormatError(f"path: {path} holds inconsistent arrays ({exc}); the file is damaged") from None
