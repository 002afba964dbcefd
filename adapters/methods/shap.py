"""shap's Partition explainer (any model) and GradientExplainer (torch models).

The Partition explainer sees float HWC images in [0, 255]; the function it
calls rounds them back to uint8 and goes through ``model.predict`` (batched),
so torch modules, NHWC array callables and black boxes need no user wrapper.
Maskers are an :class:`ImageMasker` at the API; shap's strings
(``"blur(128,128)"``) are produced only when the shap masker is built.

shap is imported inside the backend functions only, so :class:`ImageMasker`
can be imported without shap.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from xai_bridge._seeding import numpy_seeded
from xai_bridge._validate import choice, int_at_least, int_or_default, number, to_uint8
from xai_bridge.batching import merged_calls
from xai_bridge.contract import BackendResult, ExplainRequest, check_params, require_differentiable
from xai_bridge.errors import ParameterError
from xai_bridge.options import ImageMasker, MaskKind, Segmentation
from xai_bridge.registry import MethodSpec

from ._drift import LibraryClasses

__all__ = ["ImageMasker", "MaskKind", "gradient", "partition", "target_groups"]


def target_groups(targets: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split ``(N, T)`` targets into ``(columns, rows)`` groups of images sharing a target row.

    Libraries that take one output list per call are called once per group,
    so each image explains its own targets.
    """
    unique, inverse = np.unique(targets, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    return [(unique[g], np.flatnonzero(inverse == g)) for g in range(len(unique))]


def _as_uint8(x: np.ndarray) -> np.ndarray:
    if isinstance(x, np.ndarray) and x.dtype == np.uint8:
        return x  # the masker below already hands out uint8 (to_uint8 would copy it)
    return to_uint8(x)


class _PredictUint8:
    """shap's model function: float HWC batches in [0, 255] -> ``predict`` (a model's) on uint8."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray]) -> None:
        self.predict = predict

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.predict(_as_uint8(x)), dtype=np.float64)


_PARTITION_DEFAULTS: dict[str, Any] = {
    "masker": MaskKind.INPAINT_TELEA,
    "max_evals": 500,
    "batch_size": 50,
    "fixed_context": None,
    "partition": None,
}


def partition(request: ExplainRequest) -> BackendResult:
    """Shap's Partition explainer on image pixels: Owen values with hierarchical masking.

    Lundberg & Lee 2017 (https://arxiv.org/abs/1705.07874); the masking follows
    shap's image examples. The partition hierarchy is shap's axis-aligned split of ``(H, W, 3)``. Values
    satisfy efficiency: their sum over pixels and channels is
    ``f(x) - f(fully masked)``; ``base_scores`` holds ``f(fully masked)``.
    Every masked image reaches the model as uint8 (the model contract), so a
    blur or constant fill is rounded to whole pixel values where shap, given a
    float model function, would pass the float fill: ``base_scores`` can differ
    from shap's own base value by that rounding (issue 28 measured 2.7% on
    seed 003's mean-colour fill); the values still add up to ``f(x)`` minus
    ``base_scores`` as computed here.
    shap breaks priority ties with numpy's global RNG: it is seeded with
    ``request.seed`` for each image alone (and restored), so results are
    reproducible and an image's values do not depend on the other images.
    Several images are explained concurrently, their model calls merged into
    shared forward passes (:func:`~xai_bridge.batching.merged_calls`).

    Params:
        masker: :class:`ImageMasker`, a :class:`MaskKind` or shap's string
            (default ``"inpaint_telea"``; a model with a ``default_image_masker``
            gives its own: a detector's is a blur as large as the image).
        max_evals: model evaluations per image (default 500, shap's).
        batch_size: masked images per model call; it also decides which
            partitions are expanded within ``max_evals`` (default 50).
        fixed_context: shap's ``fixed_context`` (None, 0 or 1).
        partition: the feature hierarchy. None (default): shap's axis-aligned
            split of the pixels. Otherwise semantic regions, merged bottom-up
            by adjacency and colour (:mod:`~xai_bridge.adapters.methods._regions`):
            an ``xb.Segmentation`` (or a kind name, a dict, a callable
            ``image -> int labels``), an int label image ``(H, W)``, or bool
            masks ``(K, H, W)`` (the rest of the image is one more region).
            Each region gets one Owen value, spread evenly over its pixels;
            the regions are in ``extras["segments"]``.
    """
    import shap

    params = check_params(request.method, request.params, _PARTITION_DEFAULTS)
    masker = _masker(request, params["masker"])
    max_evals = int_at_least("max_evals", params["max_evals"], 2)
    batch_size = int_at_least("batch_size", params["batch_size"], 1)
    params["fixed_context"] = choice("fixed_context", params["fixed_context"], [None, 0, 1])
    images, targets = request.images, request.targets
    _, h, w, _ = images.shape
    shape = (h, w, 3)
    mask_value = masker.shap_mask_value(shape)
    call = {"max_evals": max_evals, "batch_size": batch_size, "fixed_context": params["fixed_context"], "silent": True}
    effective = {**params, "masker": masker, "max_evals": max_evals, "batch_size": batch_size}
    if params["partition"] is not None:
        return _partition_regions(request, call, mask_value, effective)
    del effective["partition"]  # the axis-aligned run records what it always did

    def explain_one(i: int, predict: Callable[[np.ndarray], np.ndarray]) -> Any:
        explainer = _explainer(predict, mask_value, shape)
        return explainer(images[i : i + 1].astype(np.float64), outputs=targets[i], **call)

    outs = _each_image(request, explain_one)
    values = np.stack([np.transpose(np.asarray(o.values).reshape(h, w, 3, -1), (3, 2, 0, 1)) for o in outs])
    values = values.astype(np.float32)  # (N, T, 3, H, W)
    base = np.stack([np.asarray(o.base_values).reshape(-1) for o in outs]).astype(np.float32)
    return BackendResult(
        attributions=values.sum(axis=2),
        raw=values,
        base_scores=base,
        params=effective,
        backend_version=shap.__version__,
        uses_seed=True,
    )


def _masker(request: ExplainRequest, given: Any) -> ImageMasker:
    """``masker=``, else the model's ``default_image_masker(height, width)`` where it has one (a detector's).

    Classifiers keep shap's default, inpainting.
    """
    default = getattr(request.model, "default_image_masker", None)
    if "masker" in request.params or default is None:
        return ImageMasker.parse(given)
    _, h, w, _ = request.images.shape
    return ImageMasker.parse(default(h, w))


def _each_image(
    request: ExplainRequest, explain_one: Callable[[int, Callable[[np.ndarray], np.ndarray]], Any]
) -> list[Any]:
    """``explain_one(i, predict)`` for every image: one explainer per image, each seeded alone.

    An image's values then do not depend on the other images; with several
    images they run at once and share forward passes (their rounds depend
    on each other).
    """
    n = len(request.images)
    if n == 1:
        with numpy_seeded(request.seed):
            return [explain_one(0, request.model.predict)]
    jobs = [functools.partial(explain_one, i) for i in range(n)]
    return list(merged_calls(request.model.predict, jobs, numpy_seeds=[request.seed] * n))


def _partition_regions(
    request: ExplainRequest, call: dict[str, Any], mask_value: Any, effective: dict[str, Any]
) -> BackendResult:
    """The Partition explainer over each image's semantic regions (see :mod:`._regions`)."""
    import shap

    from ._regions import region_masker, regions_of, spread
    from ._segments import map_images

    images, targets = request.images, request.targets
    spec = effective["partition"]
    library = not callable(spec) or isinstance(spec, Segmentation)
    regions = map_images(lambda image: regions_of(spec, image), images, parallel=library)

    def explain_one(i: int, predict: Callable[[np.ndarray], np.ndarray]) -> Any:
        masker = region_masker(regions[i], images[i], mask_value)
        explainer = shap.explainers.Partition(_PredictUint8(predict), masker)
        return explainer(images[i : i + 1].astype(np.float64), outputs=targets[i], **call)

    outs = _each_image(request, explain_one)
    t = targets.shape[1]
    maps = np.stack(
        [
            spread(np.asarray(o.values, np.float64).reshape(r.count, t), r.labels)
            for o, r in zip(outs, regions, strict=True)
        ]
    )
    base = np.stack([np.asarray(o.base_values).reshape(-1) for o in outs]).astype(np.float32)
    segments = np.stack([r.labels for r in regions])
    return BackendResult(
        attributions=maps.astype(np.float32),
        base_scores=base,
        params={**effective, "partition": _describe_partition(spec, regions)},
        backend_version=shap.__version__,
        uses_seed=True,
        extras={"segments": np.repeat(segments[:, None], t, axis=1)},
    )


def _describe_partition(spec: Any, regions: list[Any]) -> Any:
    """A JSON-able record of the ``partition=`` value: its description and the region count per image."""
    return {"regions": regions[0].description, "count": [r.count for r in regions]}


_GRADIENT_DEFAULTS = {"background": "black", "nsamples": 200, "local_smoothing": 0.0, "batch_size": None}


def gradient(request: ExplainRequest) -> BackendResult:
    """Shap's GradientExplainer: expected gradients on image pixels of a torch model.

    Erion et al. 2021, https://arxiv.org/abs/1906.10670. Runs on
    ``model.pixel_module()``, so values are per image pixel in [0, 255] units
    and the background lives in the same space. ``base_scores`` is the
    mean output on the background (what the values sum to approximately, with
    ``f(x)``). Seeded: shap's ``rseed`` and the torch RNG (forked) use
    ``request.seed``.

    Params:
        background: ``"black"`` (one black image, the default), an int ``k``
            (``k`` uniform-noise images drawn from the seed) or an array of
            images ``(K, H, W, 3)`` / ``(H, W, 3)`` in 0..255 at the image size.
        nsamples: gradient samples per image and target (default 200).
        local_smoothing: std of Gaussian noise added to the input, in pixel
            units (default 0).
        batch_size: samples per forward/backward pass (default: the model's).
    """
    import shap
    import torch
    from xai_bridge.adapters._torch import seeded

    params = check_params(request.method, request.params, _GRADIENT_DEFAULTS)
    model = require_differentiable(request, working="shap.Partition, lime, rise")
    nsamples = int_at_least("nsamples", params["nsamples"], 1)
    batch_size = int_or_default("batch_size", params["batch_size"], model.batch_size)
    smoothing = number("local_smoothing", params["local_smoothing"], 0)
    images, targets = request.images, request.targets
    n, h, w, _ = images.shape
    background = _background(params["background"], (h, w), request.seed)
    net = model.pixel_module()
    x = model.pixel_tensor(images)
    bg = torch.from_numpy(np.ascontiguousarray(background.transpose(0, 3, 1, 2))).to(model.device)
    values = np.zeros((n, targets.shape[1], 3, h, w), np.float32)
    evals = 0
    with model.guard(freeze_params=True):
        for cols, rows in target_groups(targets):
            selected = _select_columns(net, cols)
            with seeded(request.seed, model.device):  # the RNG lock is taken before torch's state is forked
                explainer = shap.GradientExplainer(selected, bg, batch_size=batch_size, local_smoothing=smoothing)
                out = explainer.shap_values(x[rows], nsamples=nsamples, rseed=request.seed % 2**32)
            values[rows] = np.transpose(np.asarray(out).reshape(len(rows), 3, h, w, -1), (0, 4, 1, 2, 3))
            evals += len(bg) + len(rows) * len(cols) * nsamples
        with torch.no_grad():
            bg_out = net(bg).float().cpu().numpy()
    evals += len(bg)
    base = bg_out.mean(axis=0)[targets]
    return BackendResult(
        attributions=values.sum(axis=2),
        raw=values,
        base_scores=base,
        params={**params, "background": _describe(params["background"])}
        | {"nsamples": nsamples, "local_smoothing": smoothing, "batch_size": batch_size},
        backend_version=shap.__version__,
        n_model_evals=evals,
        uses_seed=True,
    )


def _select_columns(net: Any, cols: np.ndarray) -> Any:
    """An ``nn.Module`` returning ``net``'s outputs at ``cols`` only (shap explains every output)."""
    import torch
    from torch import nn

    class SelectColumns(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            device = next((t.device for t in net.parameters()), torch.device("cpu"))
            self.cols = torch.as_tensor(np.asarray(cols, np.int64), device=device)  # once, not per forward

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            cols = self.cols if self.cols.device == x.device else self.cols.to(x.device)
            return self.net(x).index_select(1, cols)

    return SelectColumns()


def _background(spec: Any, size: tuple[int, int], seed: int) -> np.ndarray:
    h, w = size
    if isinstance(spec, str):
        if spec != "black":
            raise ParameterError(f"background: expected 'black', an int or an image array, got {spec!r}")
        return np.zeros((1, h, w, 3), np.float32)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if spec < 1:
            raise ParameterError(f"background: expected at least 1 noise image, got {spec}")
        return np.random.default_rng(seed).uniform(0, 255, size=(int(spec), h, w, 3)).astype(np.float32)
    arr = np.asarray(spec, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1:] != (h, w, 3):
        raise ParameterError(f"background: expected images of shape (K, {h}, {w}, 3), got {arr.shape}")
    if arr.min() < 0 or arr.max() > 255:
        raise ParameterError("background: expected pixel values in 0..255")
    return arr


def _describe(spec: Any) -> Any:
    if isinstance(spec, (str, int, np.integer)):
        return spec
    arr = np.asarray(spec)
    return f"array{tuple(arr.shape)}"


@functools.lru_cache(maxsize=4)
def _partition_tree(shape: tuple[int, int, int]) -> np.ndarray:
    """Shap's axis-aligned partition tree for images of ``shape`` (read-only).

    It depends on the shape alone, and building it costs ~0.5 s at 224x224
    (more than 40 forward passes of EfficientNet-Lite0), so it is built once
    per shape and process.
    """
    import shap

    tree = shap.maskers.Image(0.0, shape).clustering
    tree.setflags(write=False)
    return tree


def _image_masker(mask_value: Any, shape: tuple[int, int, int]) -> Any:
    """``shap.maskers.Image(mask_value, shape)`` whose partition tree comes from :func:`_partition_tree`."""
    return _masker_class()(mask_value, shape)


@functools.lru_cache(maxsize=1)
def _masker_class() -> type:
    import shap

    class Image(shap.maskers.Image):  # type: ignore[misc,name-defined]
        """shap's image masker, its partition tree built once per shape (a copy per masker).

        For blur and constant fills it hands out the masked image as uint8,
        ``where(mask, image, fill)`` with the fill rounded once per image: the
        bytes the model receives are those of shap's float64 masked image
        rounded to uint8 (what :class:`_PredictUint8` did per batch), at an
        eighth of the memory traffic, with one vectorised pass instead of a
        copy and a boolean-indexed scatter per evaluation (shap's own
        per-evaluation cost was ~15% of a Partition call on EfficientNet-Lite0).
        Inpainting keeps shap's path.
        """

        def build_partition_tree(self) -> None:
            self.clustering = _partition_tree(tuple(self.input_shape)).copy()

        def __call__(self, mask: Any, x: Any) -> Any:
            rounded = self._rounded(x)
            if rounded is None or mask is None or getattr(mask, "dtype", None) != np.bool_:
                out = super().__call__(mask, x)
                return (_as_uint8(out[0]), *out[1:])
            image, fill = rounded
            return (np.where(mask, image, fill).reshape(1, *np.shape(x)),)

        def _rounded(self, x: Any) -> tuple[np.ndarray, np.ndarray] | None:
            """The image and its fill as flat uint8, computed once per image (None: shap's own path)."""
            if isinstance(self.mask_value, str) and self.blur_kernel is None:
                return None  # inpainting
            if not isinstance(x, np.ndarray) or x.size != int(np.prod(self.input_shape)):
                return None
            cached = getattr(self, "_rounded_cache", None)
            if cached is not None and cached[0] is x:
                return cached[1]
            import cv2

            flat = x.reshape(-1)
            if isinstance(self.mask_value, str):
                fill = cv2.blur(flat.reshape(self.input_shape), self.blur_kernel).reshape(-1)
            else:
                fill = np.asarray(self.mask_value, dtype=np.float64).reshape(-1)
            rounded = (_as_uint8(flat), _as_uint8(fill))
            self._rounded_cache = (x, rounded)  # holds x: its id cannot be reused meanwhile
            return rounded

    return Image


@functools.lru_cache(maxsize=2)
def _template(shape: tuple[int, int, int]) -> Any:
    """A Partition explainer for images of ``shape`` with no model: its tree and mask matrix, built once.

    The explainer precomputes a sparse matrix of every partition's pixels from
    the tree (seconds at 224x224, more than the tree itself); it depends on the
    shape alone and is only read while explaining.
    """
    import shap

    return shap.explainers.Partition(_no_model, _image_masker(0.0, shape))


def _no_model(x: np.ndarray) -> np.ndarray:
    raise RuntimeError("the template explainer has no model")


def _explainer(predict: Callable[[np.ndarray], np.ndarray], mask_value: Any, shape: tuple[int, int, int]) -> Any:
    """A Partition explainer calling ``predict`` (on uint8) with its own masker, sharing the template's structure.

    shap keeps the state of a running explanation on the explainer and a
    blurred or inpainted image on the masker, so each image gets its own of
    both; the tree and the mask matrix are shared, read-only.
    """
    import shap

    explainer = copy.copy(_template(shape))
    explainer.masker = _image_masker(mask_value, shape)
    explainer.model = shap.models.Model(_PredictUint8(predict))
    return explainer


def _partition_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """:func:`partition`'s evaluations: ``max_evals`` per image (all targets share them)."""
    return n * int(params.get("max_evals", _PARTITION_DEFAULTS["max_evals"]))


SPECS = (
    MethodSpec(
        name="shap.Partition",
        budget="max_evals",
        budget_default=int(_PARTITION_DEFAULTS["max_evals"]),
        evaluations=_partition_evals,
        quick={"max_evals": 24, "masker": "blur(8,8)"},
        target=f"{__name__}:partition",
        requires=("shap", "cv2"),
        extra="shap",
        family="perturbation",
        signed=True,
        random=True,  # shap breaks priority ties with numpy's global generator, seeded
        description="shap's Partition explainer (Owen values) with an image masker (inpaint, blur, constant); "
        "any model, batched through model.predict.",
        aliases=("shap.partition",),
    ),
    MethodSpec(
        name="shap.Gradient",
        target=f"{__name__}:gradient",
        requires=("shap", "torch"),
        extra="shap",
        family="gradient",
        needs_gradients=True,
        signed=True,
        random=True,
        description="shap's GradientExplainer (expected gradients) on image pixels of a torch model.",
        quick={"nsamples": 8},
        aliases=("shap.gradient",),
    ),
)

_TABULAR = "explains tabular features of a model's inputs, not image pixels"
#: What the drift test reads: every public class of ``shap.explainers`` is registered or excluded with a reason.
CLASSES = LibraryClasses(
    "shap.explainers",
    "shap",
    routed={"PartitionExplainer": "shap.Partition", "GradientExplainer": "shap.Gradient"},
    excluded={
        **dict.fromkeys(("TreeExplainer", "GPUTreeExplainer", "LinearExplainer", "AdditiveExplainer"), _TABULAR),
        "CoalitionExplainer": "Owen values over a user-given grouping of tabular features; images: shap.Partition",
        "DeepExplainer": "DeepLIFT-style SHAP; captum.DeepLiftShap routes the same method on image pixels",
        "ExactExplainer": "exact Shapley values need 2^features evaluations; on images shap.Partition",
        "KernelExplainer": "Kernel SHAP over tabular features; captum.KernelShap routes it over superpixels",
        "PermutationExplainer": "permutation sampling over tabular features; captum.ShapleyValueSampling on images",
        "SamplingExplainer": "Shapley sampling over tabular features; captum.ShapleyValueSampling on images",
    },
)
