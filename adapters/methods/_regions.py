"""Semantic regions for shap's Partition explainer: a hierarchy of segments as a shap partition tree.

shap's image masker splits ``(H, W, 3)`` along axes (halves, quarters,
eighths), so an object is cut wherever the grid falls. Here the features
are the image's regions instead: superpixels, a user's masks or a label
image. Adjacent regions of similar colour are merged bottom-up by
scikit-learn's connectivity-constrained Ward clustering (the region
adjacency graph is the connectivity), and the merge tree becomes the
linkage matrix that shap's Partition explainer walks. Its Owen values keep
the explainer's guarantees (efficiency: they sum to ``f(image) - f(fully
masked)``) with one value per region, spread evenly over the region's
pixels.

Regions come from:
    * a segmentation (``xb.Segmentation``, a kind name, a dict, or a callable
      ``uint8 (H, W, 3) -> int (H, W)``);
    * an integer label image ``(H, W)``, e.g. a segmentation model's output;
    * bool masks ``(K, H, W)`` or a list of them, e.g. SAM's; pixels in no mask
      form one more region (the rest of the image). Where masks overlap, a
      pixel belongs to the smallest mask that holds it (earlier masks first
      among equal sizes), so a part nested in a whole keeps its own region;
    * boxes: a list of ``xb.Box(x0, y0, x1, y1)`` or a detector's output
      ``{"boxes": (K, 4), ...}``, each box a mask (clipped to the image).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xai_bridge.errors import ParameterError
from xai_bridge.options import Segmentation

__all__ = ["Regions", "region_labels", "region_masker", "region_tree", "regions_of"]


@dataclass(frozen=True)
class Regions:
    """An image's regions and their merge tree.

    Attributes:
        labels: int32 ``(H, W)``, region ids ``0 .. R-1``.
        tree: float64 ``(R-1, 4)`` linkage matrix (left, right, distance, size)
            over the ``R`` regions, in scipy's and shap's format.
        description: what the regions came from (JSON-able), for the Explanation's params.
    """

    labels: np.ndarray
    tree: np.ndarray
    description: Any

    @property
    def count(self) -> int:
        """The number of regions ``R``."""
        return int(self.tree.shape[0] + 1)


def regions_of(spec: Any, image: np.ndarray) -> Regions:
    """The regions of one uint8 ``(H, W, 3)`` image for a ``partition=`` value, with their merge tree."""
    labels, description = region_labels(spec, image)
    return Regions(labels, region_tree(image, labels), description)


def region_labels(spec: Any, image: np.ndarray) -> tuple[np.ndarray, Any]:
    """Labels ``(H, W)`` int32 numbered ``0 .. R-1`` (R >= 2) and a description, for a ``partition=`` value."""
    h, w = image.shape[:2]
    boxes = _boxes(spec)
    if boxes is not None:
        return _from_masks(_box_masks(boxes, (h, w)), (h, w)), f"{len(boxes)} boxes"
    if isinstance(spec, np.ndarray) and spec.dtype == np.bool_ and spec.ndim == 3:
        return _from_masks(list(spec), (h, w)), f"{len(spec)} masks"
    if isinstance(spec, (list, tuple)) and spec and not isinstance(spec[0], (str, int, float)):
        return _from_masks(list(spec), (h, w)), f"{len(spec)} masks"
    if isinstance(spec, (list, tuple)):
        raise ParameterError(
            f"partition: expected at least one bool mask of shape {(h, w)}, got {spec!r}; "
            "pass masks, a label image or xb.Segmentation(...)"
        )
    if isinstance(spec, np.ndarray):
        return _checked_labels(spec, (h, w), "partition"), "label image"
    seg = Segmentation.ensure(spec)
    labels = seg(image) if isinstance(seg, Segmentation) else seg(image.copy())
    desc = seg.describe() if isinstance(seg, Segmentation) else repr(seg)
    return _checked_labels(labels, (h, w), "partition (the segmentation's output)"), desc


def _boxes(spec: Any) -> np.ndarray | None:
    """``(K, 4)`` boxes where ``spec`` is a list of boxes or a detector's output, else None."""
    if isinstance(spec, Mapping) and "boxes" in spec:
        value = spec["boxes"]
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else value
        return np.asarray(value, np.float64).reshape(-1, 4)
    if hasattr(spec, "boxes") and hasattr(spec, "labels"):  # Detections
        return np.asarray(spec.boxes, np.float64).reshape(-1, 4)
    if isinstance(spec, (list, tuple)) and spec and all(type(b).__name__ == "Box" for b in spec):
        return np.asarray([tuple(b) for b in spec], np.float64)
    return None


def _box_masks(boxes: np.ndarray, shape: tuple[int, int]) -> list[np.ndarray]:
    h, w = shape
    masks = []
    for k, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        c1, r1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
        if c1 <= c0 or r1 <= r0:
            raise ParameterError(
                f"partition[{k}]: box {(x0, y0, x1, y1)} has no pixel inside the {w}x{h} image; "
                "pass xb.Box(x0, y0, x1, y1) with x the column and y the row, in pixels"
            )
        mask = np.zeros(shape, bool)
        mask[r0:r1, c0:c1] = True
        masks.append(mask)
    return masks


def _checked_labels(labels: Any, shape: tuple[int, int], name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.shape != shape:
        raise ParameterError(f"{name}: expected integer labels of shape {shape}, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ParameterError(
            f"{name}: expected integer labels, got {arr.dtype}; return region ids (e.g. labels.astype(int))"
        )
    _, inverse = np.unique(arr, return_inverse=True)
    out = inverse.reshape(shape).astype(np.int32)
    return _at_least_two(out, name)


def _at_least_two(labels: np.ndarray, name: str) -> np.ndarray:
    if int(labels.max()) < 1:
        raise ParameterError(
            f"{name}: expected at least 2 regions, got 1 (the whole image); "
            "one region has one value, f(image) - f(masked): pass more regions or partition=None"
        )
    return labels


def _from_masks(masks: Sequence[Any], shape: tuple[int, int]) -> np.ndarray:
    stack = []
    for k, m in enumerate(masks):
        arr = np.asarray(m)
        if arr.shape != shape:
            raise ParameterError(f"partition[{k}]: expected a bool mask of shape {shape}, got shape {arr.shape}")
        if arr.dtype != np.bool_:
            raise ParameterError(f"partition[{k}]: expected a bool mask, got {arr.dtype}; pass mask.astype(bool)")
        if not arr.any():
            raise ParameterError(f"partition[{k}]: the mask is empty; drop it or pass a mask with pixels")
        stack.append(arr)
    if not stack:
        raise ParameterError("partition: expected at least one mask, got none; pass masks or partition=None")
    # smallest first (stable: earlier masks first among equal sizes); the first that holds a pixel owns it
    order = sorted(range(len(stack)), key=lambda k: int(stack[k].sum()))
    labels = np.zeros(shape, np.int32)  # 0: the rest of the image
    owned = np.zeros(shape, bool)
    for k in order:
        take = stack[k] & ~owned
        labels[take] = k + 1
        owned |= take
    _, inverse = np.unique(labels, return_inverse=True)
    return _at_least_two(inverse.reshape(shape).astype(np.int32), "partition")


def region_tree(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The linkage matrix merging adjacent regions of similar mean colour (Ward, CIELAB).

    scikit-learn's ``AgglomerativeClustering`` with the region adjacency graph
    as ``connectivity`` only merges regions that touch, so every node of the
    tree is a connected part of the image.
    """
    from scipy import sparse
    from skimage.color import rgb2lab
    from sklearn.cluster import AgglomerativeClustering

    r = int(labels.max()) + 1
    lab = rgb2lab(np.asarray(image, np.uint8)).reshape(-1, 3)
    flat = labels.reshape(-1)
    size = np.bincount(flat, minlength=r).astype(np.float64)
    features = np.stack([np.bincount(flat, lab[:, c], minlength=r) for c in range(3)], axis=1) / size[:, None]
    pairs = np.concatenate(
        [
            np.stack([labels[:, :-1].reshape(-1), labels[:, 1:].reshape(-1)], axis=1),
            np.stack([labels[:-1].reshape(-1), labels[1:].reshape(-1)], axis=1),
        ]
    )
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    adjacency = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(r, r))
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64).tocsr()
    if r == 2:
        return np.array([[0.0, 1.0, float(np.linalg.norm(features[0] - features[1])), 2.0]])
    model = AgglomerativeClustering(
        n_clusters=1, connectivity=adjacency, linkage="ward", compute_full_tree=True, compute_distances=True
    ).fit(features)
    return _linkage(model.children_, model.distances_, r)


def _linkage(children: np.ndarray, distances: np.ndarray, r: int) -> np.ndarray:
    """scikit-learn's ``children_`` and ``distances_`` as a scipy linkage matrix (with cluster sizes)."""
    counts = np.ones(2 * r - 1)
    tree = np.zeros((r - 1, 4))
    for i, (a, b) in enumerate(children):
        counts[r + i] = counts[a] + counts[b]
        tree[i] = (a, b, max(float(distances[i]), 0.0), counts[r + i])
    return tree


def region_masker(regions: Regions, image: np.ndarray, mask_value: Any) -> Any:
    """A shap masker over ``regions``: a bool mask of R entries hides the regions where it is False.

    Args:
        regions: the image's regions and tree.
        image: float or uint8 ``(H, W, 3)`` in 0..255, the image being explained.
        mask_value: shap's mask value for the image masker (``"inpaint_telea"``,
            ``"inpaint_ns"``, ``"blur(kx,ky)"`` or an array of ``H*W*3`` fill values),
            as :meth:`ImageMasker.shap_mask_value` gives it.
    """
    return _masker_class()(regions, image, mask_value)


@functools.lru_cache(maxsize=1)
def _masker_class() -> type:
    import cv2
    import shap

    class RegionMasker(shap.maskers.Masker):  # type: ignore[misc,name-defined]
        """Hides whole regions; hands the model uint8 images, as the axis-aligned masker does."""

        def __init__(self, regions: Regions, image: np.ndarray, mask_value: Any) -> None:
            self.labels = regions.labels
            self.clustering = regions.tree
            self.shape = (1, regions.count)
            self.image = np.clip(np.rint(np.asarray(image, np.float64)), 0, 255).astype(np.uint8)
            self.mask_value = mask_value
            self.fixed_background = False
            self.immutable_outputs = True
            if isinstance(mask_value, str) and mask_value.startswith("blur("):
                kernel = tuple(int(k) for k in mask_value[5:-1].split(","))
                fill = cv2.blur(np.asarray(image, np.float64), kernel)
                self.fill: np.ndarray | None = np.clip(np.rint(fill), 0, 255).astype(np.uint8)
            elif isinstance(mask_value, str):
                self.fill = None  # inpainting, per mask
            else:
                fill = np.asarray(mask_value, np.float64).reshape(self.image.shape)
                self.fill = np.clip(np.rint(fill), 0, 255).astype(np.uint8)

        def mask_shapes(self, *args: Any) -> list[tuple[int, ...]]:
            return [(self.shape[1],)]

        def __call__(self, mask: Any, *args: Any) -> tuple[np.ndarray]:
            keep = np.ones(self.shape[1], bool) if mask is None else np.asarray(mask, bool)
            pixels = keep[self.labels]  # (H, W): True where the image shows
            if self.fill is not None:
                out = np.where(pixels[..., None], self.image, self.fill)
            elif not pixels.any():
                out = np.empty_like(self.image)
                out[:] = np.rint(self.image.reshape(-1, 3).mean(0)).astype(np.uint8)
            else:
                flag = cv2.INPAINT_TELEA if self.mask_value == "inpaint_telea" else cv2.INPAINT_NS
                out = cv2.inpaint(self.image, (~pixels).astype(np.uint8), 3, flag)
            return (out[None],)

    return RegionMasker


def spread(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Region values ``(R, T)`` as pixel maps ``(T, H, W)``: each region's value divided evenly over its pixels.

    The maps then sum to the region values' sum, so the explainer's
    efficiency carries over to the pixel map.
    """
    size = np.bincount(labels.reshape(-1), minlength=values.shape[0]).astype(np.float64)
    per_pixel = values / size[:, None]
    return np.moveaxis(per_pixel[labels], -1, 0)
