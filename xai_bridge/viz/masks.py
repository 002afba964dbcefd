"""Superpixel views of an :class:`~xai_bridge.Explanation` (numpy only).

:func:`image_and_mask` reproduces lime's ``ImageExplanation.get_image_and_mask``
(seed 004's positive/negative mask view) from a LIME Explanation's extras, and
works for any other method when given superpixel ``segments``.
"""

from __future__ import annotations

import numpy as np

from xai_bridge.errors import ParameterError
from xai_bridge.explanation import Explanation

__all__ = ["image_and_mask", "ranked_superpixels", "superpixel_weights"]


def superpixel_weights(attributions: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Mean attribution of each superpixel.

    Args:
        attributions: ``(H, W)`` map.
        segments: ``(H, W)`` integer labels ``0..S-1``.

    Returns:
        float64 ``(S,)``; superpixels with no pixel get 0.
    """
    attributions = np.asarray(attributions, dtype=np.float64)
    segments = np.asarray(segments)
    if attributions.shape != segments.shape:
        raise ParameterError(f"segments: expected shape {attributions.shape} to match the map, got {segments.shape}")
    if segments.dtype.kind not in "iu" or (segments.size and segments.min() < 0):
        raise ParameterError("segments: expected non-negative integer labels")
    flat = segments.ravel()
    sums = np.bincount(flat, weights=attributions.ravel())
    counts = np.bincount(flat)
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)


def ranked_superpixels(
    explanation: Explanation, image: int = 0, target: int = 0, segments: np.ndarray | None = None
) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Return ``(segments, [(superpixel, weight), ...])`` by decreasing ``|weight|``.

    With ``segments`` None the Explanation must come from LIME (its extras hold
    lime's own ranking); otherwise the weights are the mean attribution of each
    of the given superpixels.
    """
    if segments is None:
        missing = {"segments", "superpixel_weights", "superpixel_order"} - set(explanation.extras)
        if missing:
            raise ParameterError(
                f"segments: the {explanation.method!r} Explanation has no superpixels; pass segments=(H, W) labels "
                "(e.g. from a segmentation of the image) or use a LIME Explanation"
            )
        segs = np.asarray(explanation.extras["segments"][image, target])
        order = explanation.extras["superpixel_order"][image, target]
        weights = explanation.extras["superpixel_weights"][image, target]
        return segs, [(int(f), float(weights[f])) for f in order if f >= 0]
    segs = np.asarray(segments)
    weights = superpixel_weights(explanation.attributions[image, target], segs)
    order = np.argsort(-np.abs(weights), kind="stable")
    return segs, [(int(f), float(weights[f])) for f in order]


def image_and_mask(
    explanation: Explanation,
    image: int = 0,
    target: int = 0,
    positive_only: bool = True,
    negative_only: bool = False,
    num_features: int = 5,
    hide_rest: bool = False,
    min_weight: float = 0.0,
    segments: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lime's ``get_image_and_mask`` for one image and target.

    Args:
        explanation: a LIME Explanation, or any Explanation with ``segments``.
        image: image index.
        target: target index (position in ``explanation.targets[image]``, not a class id).
        positive_only: keep only superpixels that raise the target.
        negative_only: keep only superpixels that lower it.
        num_features: at most this many superpixels.
        hide_rest: black out everything else.
        min_weight: keep superpixels with ``|weight|`` above this.
        segments: ``(H, W)`` superpixel labels for non-LIME Explanations.

    Returns:
        ``(image, mask)``: uint8 ``(H, W, 3)`` and int32 ``(H, W)``. ``mask`` is 1
        on kept superpixels, or with both signs (neither ``*_only``) +1/-1 by
        sign, where the image's green (+) or red (-) channel is set to its max,
        exactly as lime does. Pass them to ``skimage.segmentation.mark_boundaries``.
    """
    if positive_only and negative_only:
        raise ParameterError("positive_only, negative_only: cannot both be True")
    segs, ranked = ranked_superpixels(explanation, image, target, segments)
    img = explanation.images[image]
    mask = np.zeros(segs.shape, np.int32)
    temp = np.zeros_like(img) if hide_rest else img.copy()
    if positive_only or negative_only:
        if positive_only:
            kept = [f for f, w in ranked if w > 0 and w > min_weight][:num_features]
        else:
            kept = [f for f, w in ranked if w < 0 and abs(w) > min_weight][:num_features]
        for f in kept:
            region = segs == f
            temp[region] = img[region]
            mask[region] = 1
        return temp, mask
    top = img.max()
    for f, w in ranked[:num_features]:
        if abs(w) < min_weight:
            continue
        region = segs == f
        mask[region] = -1 if w < 0 else 1
        temp[region] = img[region]
        temp[region, 0 if w < 0 else 1] = top
    return temp, mask
