"""The common result of every method: :class:`Explanation`.

An Explanation holds parallel arrays indexed by image ``n`` and target ``t``
(shap-style), plus the provenance needed to reproduce it. It is frozen; its
arrays are made read-only so nothing downstream can change a result in place.

Saved files are a single ``.npz`` (no pickle) holding the arrays and one JSON
metadata string (written and read in :mod:`xai_bridge.saving`); conversions to
and from other libraries' objects live in :mod:`xai_bridge.interop`.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ._frozen import as_slice, frozen_array
from .errors import IndexOutOfRangeError, ParameterError
from .saving import DEFAULT_MAX_LOAD_BYTES, FORMAT_NAME, FORMAT_VERSION

__all__ = ["DEFAULT_MAX_LOAD_BYTES", "FORMAT_NAME", "FORMAT_VERSION", "Explanation", "jsonable", "qualified_name"]


Index = int | slice | Sequence[int] | np.ndarray


#: The memory address in a default ``repr`` (``<function f at 0x7f...>``): different in every process.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def qualified_name(value: Any) -> str | None:
    """``module.qualname`` of a function, method or class (None for other values).

    The same in every process, unlike a ``repr`` holding a memory address, so a
    stored run whose params hold a function is recognised when it resumes.
    """
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and callable(value):
        return f"{module}.{qualname}"
    return None


def jsonable(value: Any) -> Any:
    """Return ``value`` as plain JSON data (tuples become lists, enums their value).

    Values that JSON cannot hold become text, stable across processes: a
    function, method or class its qualified name (see :func:`qualified_name`),
    anything else its ``repr`` without memory addresses. ``params`` therefore
    round-trips through save/load exactly.
    """
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if value is None or isinstance(value, (bool, str)):
        return str(value) if isinstance(value, str) else value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else repr(f)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray) and value.size <= 64:
        return jsonable(value.tolist())
    if hasattr(value, "__dataclass_fields__"):
        return {"__type__": type(value).__name__, **{f.name: jsonable(getattr(value, f.name)) for f in fields(value)}}
    return qualified_name(value) or _ADDRESS.sub("", repr(value))


def _renamed(old: str, new: str) -> None:
    warnings.warn(
        f"Explanation.{old} is deprecated and will be removed in the next release; use Explanation.{new}",
        DeprecationWarning,
        stacklevel=3,
    )


@dataclass(frozen=True, eq=False)
class Explanation:
    """Attributions for ``N`` images and ``T`` targets per image.

    Attributes:
        attributions: float32 ``(N, T, H, W)`` maps at the resolution of ``images``.
            Raw and unnormalised: use :mod:`xai_bridge.normalization` to scale them.
        images: uint8 ``(N, H, W, 3)`` RGB images that were explained.
        targets: int64 ``(N, T)`` class indices (or token ids for captions).
        target_names: str ``(N, T)`` readable names of the targets.
        scores: float32 ``(N, T)`` model output for each target on the image
            (NaN where the method did not compute one).
        method: registered method name, e.g. ``"captum.IntegratedGradients"``.
        library: the library that produced the maps (``"captum"``, ``"builtin"``, ...);
            ``backend`` is an older name for it.
        library_version: version of that library (``backend_version``: older name).
        params: JSON data: every setting needed to reproduce the result.
        seed: random seed used, or None for deterministic methods.
        n_model_evals: number of single-image model evaluations spent.
        seconds: wall-clock seconds spent in the method.
        raw: optional float32 ``(N, T, C, H, W)`` per-channel values.
        base_scores: optional float32 ``(N, T)`` output on the baseline / fully
            masked input, where the method defines one.
        extras: method-specific arrays whose leading axes are ``(N, T)``
            (e.g. LIME segments, IG convergence delta).
    """

    attributions: np.ndarray
    images: np.ndarray
    targets: np.ndarray
    target_names: np.ndarray
    scores: np.ndarray
    method: str
    library: str
    library_version: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    n_model_evals: int = 0
    seconds: float = 0.0
    raw: np.ndarray | None = None
    base_scores: np.ndarray | None = None
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        attributions = frozen_array(self.attributions, np.float32, "attributions", 4)
        images = frozen_array(self.images, np.uint8, "images", 4)
        n, t, h, w = attributions.shape
        if images.shape != (n, h, w, 3):
            raise ParameterError(
                f"Explanation.images: expected shape {(n, h, w, 3)} to match attributions "
                f"{attributions.shape}, got {images.shape}"
            )
        set_(self, "attributions", attributions)
        set_(self, "images", images)
        set_(self, "targets", self._per_target(self.targets, np.int64, "targets"))
        names = np.asarray(self.target_names)
        if names.dtype.kind not in "U":
            names = names.astype(str)
        set_(self, "target_names", self._per_target(names, names.dtype, "target_names"))
        set_(self, "scores", self._per_target(self.scores, np.float32, "scores"))
        if self.base_scores is not None:
            set_(self, "base_scores", self._per_target(self.base_scores, np.float32, "base_scores"))
        if self.raw is not None:
            raw = frozen_array(self.raw, np.float32, "raw", 5)
            if raw.shape[:2] != (n, t) or raw.shape[3:] != (h, w):
                raise ParameterError(f"Explanation.raw: expected shape ({n}, {t}, C, {h}, {w}), got {raw.shape}")
            set_(self, "raw", raw)
        extras: dict[str, np.ndarray] = {}
        for key, value in dict(self.extras).items():
            arr = frozen_array(value, None, f"extras[{key!r}]")
            if arr.dtype == object:
                raise ParameterError(f"Explanation.extras[{key!r}]: object arrays cannot be saved; use numbers or str")
            if arr.shape[:2] != (n, t):
                raise ParameterError(
                    f"Explanation.extras[{key!r}]: leading axes must be (N, T) = {(n, t)}, got {arr.shape}"
                )
            extras[str(key)] = arr
        set_(self, "extras", MappingProxyType(extras))
        set_(self, "params", MappingProxyType(jsonable(dict(self.params))))
        set_(self, "seed", None if self.seed is None else int(self.seed))
        set_(self, "n_model_evals", int(self.n_model_evals))
        set_(self, "seconds", float(self.seconds))

    def _per_target(self, value: Any, dtype: Any, name: str) -> np.ndarray:
        arr = frozen_array(value, dtype, name)
        expected = self.attributions.shape[:2]
        if arr.shape != expected:
            raise ParameterError(f"Explanation.{name}: expected shape {expected} (N, T), got {arr.shape}")
        return arr

    # ------------------------------------------------------------------ views
    @property
    def n_images(self) -> int:
        """Number of images ``N``."""
        return int(self.attributions.shape[0])

    @property
    def n_targets(self) -> int:
        """Number of targets per image ``T``."""
        return int(self.attributions.shape[1])

    def __len__(self) -> int:
        return self.n_images

    def __getitem__(self, key: Index | tuple[Index, Index]) -> Explanation:
        """Slice by image, or by ``(image, target)``; dimensions are always kept.

        ``exp[0]`` is an Explanation with ``N == 1``; ``exp[:, :2]`` keeps the
        first two targets of every image. Integers, slices and evenly spaced
        ascending positions give views of this Explanation's read-only arrays
        (no copy); other position lists copy.
        """
        img_key, tgt_key = key if isinstance(key, tuple) else (key, slice(None))
        img_idx = self._index(img_key, self.n_images, "image")
        tgt_idx = self._index(tgt_key, self.n_targets, "target")

        def take(arr: np.ndarray) -> np.ndarray:
            return arr[img_idx][:, tgt_idx]

        return replace(
            self,
            attributions=take(self.attributions),
            images=self.images[img_idx],
            targets=take(self.targets),
            target_names=take(self.target_names),
            scores=take(self.scores),
            raw=None if self.raw is None else take(self.raw),
            base_scores=None if self.base_scores is None else take(self.base_scores),
            extras={k: take(v) for k, v in self.extras.items()},
        )

    @staticmethod
    def _index(key: Index, size: int, what: str) -> slice | np.ndarray:
        idx = np.arange(size)
        try:
            picked = idx[key]
        except IndexError as exc:
            raise IndexOutOfRangeError(f"{what} index {key!r} out of range for {size} {what}s") from exc
        return as_slice(np.atleast_1d(picked))

    def map(self, image: int = 0, target: int = 0) -> np.ndarray:
        """Return the ``(H, W)`` attribution map of one image and target."""
        return self.attributions[image, target]

    def library_view(self) -> np.ndarray:
        """The maps as the library itself normalises them, float32 ``(N, T, H, W)`` in [0, 1].

        For torchcam, exactly its ``normalized=True`` map upsampled to the
        image: min-max scaled with the *layer-resolution* map's range
        (``extras["layer_range"]``), so the values need not reach 0 and 1 at
        image resolution, where ``xb.normalize(maps, "minmax")`` scales (the
        two differ by up to a few hundredths). For every other method
        ``xb.normalize(maps, "minmax")``: pytorch-grad-cam scales again at
        image resolution, so that is its own output exactly; captum, shap and
        lime return unscaled values (``attributions`` as they are). With a
        centre-cropping preprocess, pixels outside the crop (which the model
        never sees) hold the value of a zero map.
        """
        from .interop import library_view

        return library_view(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Explanation):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype:
                    return False
                if not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
                    return False
            elif f.name == "extras":
                if a.keys() != b.keys():
                    return False
                if any(
                    a[k].dtype != b[k].dtype or not np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f")
                    for k in a
                ):
                    return False
            elif f.name == "params":
                if json.dumps(dict(a), sort_keys=True) != json.dumps(dict(b), sort_keys=True):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    @property
    def backend(self) -> str:
        """Deprecated name of :attr:`library` ("backend" now means only the call contract)."""
        _renamed("backend", "library")
        return self.library

    @property
    def backend_version(self) -> str:
        """Deprecated name of :attr:`library_version`."""
        _renamed("backend_version", "library_version")
        return self.library_version

    def __repr__(self) -> str:
        return (
            f"Explanation(method={self.method!r}, library={self.library!r}, "
            f"attributions={self.attributions.shape}, targets={self.targets.tolist()}, "
            f"n_model_evals={self.n_model_evals}, seconds={self.seconds:.3f})"
        )

    # --------------------------------------------------------------- display
    def _repr_html_(self) -> str:
        """Jupyter's view: per image the targets by name with score/probability and overlay thumbnails."""
        from .viz.notebook import explanation_html

        return explanation_html(self)

    def _repr_png_(self) -> bytes:
        """The same thumbnails as one PNG, for frontends without HTML."""
        from .viz.notebook import explanation_png

        return explanation_png(self)

    def plot(self, images: int | Sequence[int] | None = None, **kwargs: Any) -> Any:
        """A matplotlib Figure of the images and every target's map under the one colour rule.

        No pyplot state is touched and no window opens; the Figure displays in
        Jupyter by itself and saves with ``fig.savefig(path)``. Keyword
        arguments go to :func:`xai_bridge.viz.plot.explanation_plot` (``norm``,
        ``percentile``, ``alpha``, ``panel_size``, ``max_images``).
        """
        from .viz.plot import explanation_plot

        return explanation_plot(self, images, **kwargs)

    # ------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the Explanation to ``path`` (``.npz`` is appended unless it ends in ``.npz``, any case).

        The file is an uncompressed-metadata ``.npz``: arrays plus one JSON
        string ``__meta__``; it loads with ``numpy.load(allow_pickle=False)``.
        The file is written to a unique temporary name and renamed, so a crash
        never leaves a half-written file under ``path``, and concurrent saves
        to one path each leave a complete file (the last one wins).
        """
        from .saving import save_explanation

        return save_explanation(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], max_bytes: int | None = DEFAULT_MAX_LOAD_BYTES) -> Explanation:
        """Read an Explanation written by :meth:`save`.

        Every array's size is read from its header and checked before anything
        is decompressed, so a small file that inflates to gigabytes (a
        "zip bomb", or a damaged header) is refused instead of filling memory.

        Args:
            path: the ``.npz`` file.
            max_bytes: largest total decompressed size accepted. Files bigger on
                disk than ``max_bytes / 32`` may inflate up to 32 times their own
                size (real results compress less than that); None accepts any size.

        Raises:
            FormatError: the file is missing, damaged, too large, not an
                xai-bridge Explanation, or of a format version this library does
                not read; the message names the file.
        """
        from .saving import load_explanation

        return load_explanation(cls, path, max_bytes)

    # ------------------------------------------------------------------ shap
    def to_shap(self, channels: bool = True) -> Any:
        """Return a ``shap.Explanation`` that ``shap.image_plot`` accepts.

        Args:
            channels: when True the values are ``(N, H, W, 3, T)`` like shap's
                image explainers (the raw per-channel values if present, else the
                map divided evenly over the 3 channels so sums are kept); when
                False ``(N, H, W, 1, T)``.

        Returns:
            ``shap.Explanation`` with ``data`` the uint8 images scaled to [0, 1]
            floats, ``output_names`` the target names and ``base_values`` the
            base scores (zeros when the method has none).
        """
        from .interop import to_shap

        return to_shap(self, channels)

    @classmethod
    def from_shap(
        cls,
        shap_explanation: Any,
        images: np.ndarray | None = None,
        targets: Sequence[Sequence[int]] | np.ndarray | None = None,
        method: str = "shap.Partition",
        scores: np.ndarray | None = None,
        **provenance: Any,
    ) -> Explanation:
        """Build an Explanation from a ``shap.Explanation`` of images.

        Args:
            shap_explanation: values shaped ``(N, H, W, C, T)`` (or ``(N, H, W, C)``
                for a single output).
            images: uint8 ``(N, H, W, 3)`` images; defaults to ``data`` rescaled
                (floats in [0, 1] are multiplied by 255).
            targets: ``(N, T)`` target indices; defaults to ``0..T-1``.
            method: method name to record.
            scores: ``(N, T)`` model outputs; NaN when not given.
            **provenance: other Explanation fields (``params``, ``seconds`` ...).

        Returns:
            Explanation with ``attributions`` the channel sum and ``raw`` the
            per-channel values.
        """
        from .interop import from_shap

        return from_shap(cls, shap_explanation, images, targets, method, scores, **provenance)
