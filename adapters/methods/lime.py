"""LIME for images (Ribeiro et al. 2016, https://arxiv.org/abs/1602.04938) via ``lime.lime_image``.

Superpixels are computed on the uint8 image (so scikit-image sees [0, 1]
colours) with lime's own ``SegmentationAlgorithm``; lime perturbs the image
as float64 pixels in [0, 255] and every perturbed batch is rounded back to
uint8 and sent through ``model.predict``. So torch modules, NHWC callables
expecting [-1, 1] and black boxes need no user wrapper: the preprocessing is
the model's, declared once.

The Explanation holds the pixel map (each pixel gets its superpixel's weight)
and, in ``extras``, the segments and per-superpixel weights in lime's order,
from which :func:`xai_bridge.viz.masks.image_and_mask` rebuilds lime's
``get_image_and_mask`` view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from xai_bridge._validate import choice, int_at_least, int_or_default, number
from xai_bridge.contract import BackendResult, ExplainRequest, check_params, library_version
from xai_bridge.errors import ParameterError
from xai_bridge.options import Segmentation
from xai_bridge.registry import MethodSpec

__all__ = ["LIME_SEGMENTATION_DEFAULTS", "lime", "segmenter"]

#: Parameters used when ``segmentation`` is just an algorithm name. quickshift's
#: are lime's own defaults; slic and felzenszwalb keep scikit-image's, except
#: that slic numbers superpixels from 0 as lime expects.
LIME_SEGMENTATION_DEFAULTS: dict[str, dict[str, Any]] = {
    "quickshift": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    "slic": {"start_label": 0},
    "felzenszwalb": {},
}

#: The ``feature_selection`` values lime's ``LimeBase.feature_selection`` knows.
FEATURE_SELECTION = ("auto", "forward_selection", "highest_weights", "lasso_path", "none")

_DEFAULTS = {
    "num_samples": 1000,
    "hide_color": None,
    "segmentation": "quickshift",
    "batch_size": None,
    "num_features": 100000,
    "kernel_width": 0.25,
    "feature_selection": "auto",
}


def segmenter(spec: Any) -> tuple[Callable[[np.ndarray], np.ndarray], Any]:
    """Return ``(fn, description)``: ``fn`` maps a uint8 HWC image to int labels.

    Args:
        spec: an algorithm name (``"quickshift"``, ``"slic"``, ``"felzenszwalb"``,
            with :data:`LIME_SEGMENTATION_DEFAULTS`), an object with ``kind``
            and ``params`` attributes (e.g. ``Segmentation``) run through lime's
            ``SegmentationAlgorithm`` with exactly those params (unknown names
            raise; lime's wrapper would drop them), or any callable.

    Note: lime passes ``random_seed`` to quickshift, but scikit-image now calls
    it ``rng`` and lime's wrapper drops unknown names, so lime's quickshift
    always runs with scikit-image's default ``rng=42``; so does this one.
    Segmentation is deterministic either way.
    """
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    seg = Segmentation.ensure(
        spec,
        default=Segmentation("quickshift", LIME_SEGMENTATION_DEFAULTS["quickshift"]),
        kind_defaults=LIME_SEGMENTATION_DEFAULTS,
    )
    if not isinstance(seg, Segmentation):
        return seg, repr(seg)
    seg.function()  # checks the parameter names: lime's wrapper would drop unknown ones silently
    return SegmentationAlgorithm(str(seg.kind), **seg.params), seg.describe()


def _labels(segments: Any, shape: tuple[int, int]) -> np.ndarray:
    seg = np.asarray(segments)
    if seg.shape != shape:
        raise ParameterError(f"segmentation: expected labels of shape {shape}, got {seg.shape}")
    _, inverse = np.unique(seg, return_inverse=True)  # lime expects superpixels numbered 0..S-1
    return inverse.reshape(shape).astype(np.int32)


def _hide_color(value: Any) -> Any:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape not in ((), (3,)) or arr.min() < 0 or arr.max() > 255:
        raise ParameterError(
            f"hide_color: expected None (superpixel mean), a number or RGB triple in 0..255, got {value!r}"
        )
    return float(arr) if arr.ndim == 0 else tuple(float(v) for v in arr)


def lime(request: ExplainRequest) -> BackendResult:
    """LIME image explanations, one lime call per image (lime has no batch API).

    Each image uses a fresh ``LimeImageExplainer(random_state=seed)``, so an
    image's result does not depend on the other images in the batch.

    Params:
        num_samples: perturbed images per image (default 1000).
        hide_color: fill of hidden superpixels in pixel units 0-255 (number or
            RGB triple), or None for each superpixel's mean colour (lime's default).
        segmentation: see :func:`segmenter` (default lime's quickshift).
        batch_size: images per ``classifier_fn`` call (default: the model's).
        num_features: superpixels kept in each explanation (lime's default: all).
        kernel_width: lime's kernel width (default 0.25).
        feature_selection: lime's feature selection (default ``"auto"``).

    Extras:
        segments: int32 ``(N, T, H, W)`` superpixel labels 0..S-1.
        superpixel_weights: float32 ``(N, T, S_max)``; NaN for superpixels not
            in the explanation and for padding.
        superpixel_order: int32 ``(N, T, S_max)``, superpixel ids in lime's
            order (decreasing ``|weight|``), padded with -1.
        intercept, local_score, local_pred: float32 ``(N, T)``: the surrogate's
            intercept, weighted R^2 and prediction on the unperturbed image.
    """
    from lime import lime_image

    params = check_params(request.method, request.params, _DEFAULTS)
    num_samples = int_at_least("num_samples", params["num_samples"], 2)
    num_features = int_at_least("num_features", params["num_features"], 1)
    batch_size = int_or_default("batch_size", params["batch_size"], request.model.batch_size)
    kernel_width = number("kernel_width", params["kernel_width"], 0, low_open=True)
    feature_selection = choice("feature_selection", params["feature_selection"], FEATURE_SELECTION)
    hide_color = _hide_color(params["hide_color"])
    segment, seg_desc = segmenter(params["segmentation"])
    images, targets = request.images, request.targets
    n, h, w, _ = images.shape
    t = targets.shape[1]
    model = request.model

    def classifier_fn(batch: np.ndarray) -> np.ndarray:
        if batch.dtype != np.uint8:
            batch = np.clip(np.rint(batch), 0, 255).astype(np.uint8)
        return np.asarray(model.predict(batch), dtype=np.float64)

    segments = np.stack([_labels(segment(img), (h, w)) for img in images])
    s_max = int(segments.max()) + 1
    weights = np.full((n, t, s_max), np.nan, np.float32)
    order = np.full((n, t, s_max), -1, np.int32)
    fits = np.zeros((3, n, t), np.float32)  # intercept, local_score, local_pred
    attributions = np.zeros((n, t, h, w), np.float32)
    for i in range(n):
        explainer = lime_image.LimeImageExplainer(
            kernel_width=kernel_width,
            feature_selection=feature_selection,
            random_state=request.seed % 2**32,
        )
        fitted = _capture_fits(explainer)
        _vectorised_sampling(explainer)
        exp = explainer.explain_instance(
            images[i].astype(np.float64),
            classifier_fn,
            labels=tuple(int(k) for k in targets[i]),
            hide_color=hide_color,
            top_labels=None,
            num_features=num_features,
            num_samples=num_samples,
            batch_size=batch_size,
            segmentation_fn=lambda _image, seg=segments[i]: seg,
            random_seed=request.seed % 2**32,
        )
        for j, label in enumerate(targets[i]):
            ranked = exp.local_exp[int(label)]
            ids = np.array([f for f, _ in ranked], np.int64)
            vals = np.array([v for _, v in ranked], np.float64)
            order[i, j, : len(ids)] = ids
            weights[i, j, ids] = vals
            per_superpixel = np.zeros(s_max, np.float64)
            per_superpixel[ids] = vals
            attributions[i, j] = per_superpixel[segments[i]]
            intercept, _, score, local_pred = fitted[int(label)]
            fits[:, i, j] = (intercept, score, np.ravel(local_pred)[0])
    return BackendResult(
        attributions=attributions,
        params={
            **params,
            "segmentation": seg_desc,
            "hide_color": hide_color,
            "batch_size": batch_size,
            "num_samples": num_samples,
            "num_features": num_features,
        },
        backend_version=library_version("lime"),
        extras={
            "segments": np.repeat(segments[:, None], t, axis=1),
            "superpixel_weights": weights,
            "superpixel_order": order,
            "intercept": fits[0],
            "local_score": fits[1],
            "local_pred": fits[2],
        },
        uses_seed=True,
    )


def _vectorised_sampling(explainer: Any) -> None:
    """Replace lime's per-sample loop in ``data_labels`` with array operations, on this explainer only.

    Same random draws (one ``randint`` of ``num_samples * n_features``, first
    row all ones), same perturbed images in the same order and batches, so the
    result equals lime's; but no per-sample deep copy and per-superpixel
    comparison (lime's loop costs ~1 ms an image at 224x224), and no progress bar.
    Only for this backend's ``classifier_fn``, which rounds images to uint8: the
    images are mixed in uint8 directly.
    """

    def data_labels(
        image: np.ndarray,
        fudged_image: np.ndarray,
        segments: np.ndarray,
        classifier_fn: Any,
        num_samples: int,
        batch_size: int = 10,
        **_: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        n_features = np.unique(segments).shape[0]
        data = explainer.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
        data[0, :] = 1
        width = max(int(segments.max()) + 1, n_features)
        # classifier_fn rounds to uint8 anyway: mixing uint8 images gives the same batches, 8x less memory
        image, fudged_image = (np.clip(np.rint(a), 0, 255).astype(np.uint8) for a in (image, fudged_image))
        labels = []
        for start in range(0, num_samples, batch_size):
            rows = data[start : start + batch_size]
            hide = np.zeros((len(rows), width), bool)
            hide[:, :n_features] = rows == 0  # lime hides the pixels of segment ids z with row[z] == 0
            hidden = hide[:, segments]  # (b, H, W)
            labels.extend(classifier_fn(np.where(hidden[..., None], fudged_image, image)))
        return data, np.array(labels)

    explainer.data_labels = data_labels


def _capture_fits(explainer: Any) -> dict[int, tuple[Any, ...]]:
    """Record each label's surrogate fit: lime's ImageExplanation keeps only the last one's score."""
    fitted: dict[int, tuple[Any, ...]] = {}
    fit = explainer.base.explain_instance_with_data

    def capture(data: Any, labels: Any, distances: Any, label: int, *args: Any, **kwargs: Any) -> Any:
        out = fit(data, labels, distances, label, *args, **kwargs)
        fitted[int(label)] = out
        return out

    explainer.base.explain_instance_with_data = capture  # this explainer instance only
    return fitted


SPECS = (
    MethodSpec(
        name="lime.Lime",
        target=f"{__name__}:lime",
        requires=("lime", "skimage", "sklearn"),
        extra="lime",
        family="perturbation",
        signed=True,
        random=True,
        description="LIME image explanations (Ribeiro et al. 2016): superpixel weights and a pixel map; "
        "any model, batched through model.predict.",
        aliases=("lime",),
    ),
)
