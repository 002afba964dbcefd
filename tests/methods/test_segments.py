"""Superpixel segmentation helpers: parity with scikit-image, relabelling, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("skimage")
import skimage.segmentation
from xai_bridge.adapters.methods._segments import as_segmenter, map_images, segment_images

from xai_bridge.options import DEFAULT_SEGMENTATION, Segmentation, SegmentationKind, relabel


def _image(seed: int = 0, size: int = 24) -> np.ndarray:
    """Four flat colour quadrants plus mild noise: clear superpixel structure."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), dtype=np.float64)
    half = size // 2
    img[:half, :half] = (220, 30, 30)
    img[:half, half:] = (30, 220, 30)
    img[half:, :half] = (30, 30, 220)
    img[half:, half:] = (220, 220, 30)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label maps define the same regions (up to renumbering)."""
    pairs = {(int(x), int(y)) for x, y in zip(a.ravel(), b.ravel(), strict=False)}
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


@pytest.mark.parametrize(
    "kind, params",
    [
        ("slic", {"n_segments": 8, "compactness": 10, "start_label": 0}),
        ("quickshift", {"kernel_size": 3, "max_dist": 6, "ratio": 0.5, "rng": 0}),
        ("felzenszwalb", {"scale": 50, "sigma": 0.5, "min_size": 10}),
    ],
)
def test_parity_with_skimage(kind: str, params: dict) -> None:
    img = _image()
    labels = Segmentation(kind, params)(img)
    expected = getattr(skimage.segmentation, kind)(img, **params)
    assert labels.shape == img.shape[:2]
    assert labels.dtype == np.int32
    assert _same_partition(labels, expected)
    # numbered 0..S-1 without gaps
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


def test_quadrants_are_separated() -> None:
    img = _image()
    labels = Segmentation("felzenszwalb", {"scale": 100, "sigma": 0.5, "min_size": 20})(img)
    # no superpixel straddles two colour quadrants
    for q1, q2 in [((0, 0), (0, 23)), ((0, 0), (23, 0)), ((23, 23), (0, 23))]:
        assert labels[q1] != labels[q2]


def test_deterministic_and_frozen() -> None:
    seg = Segmentation(SegmentationKind.SLIC, {"n_segments": 10})
    assert seg.kind == "slic"
    img = _image(1)
    np.testing.assert_array_equal(seg(img), seg(img))
    with pytest.raises(dataclasses.FrozenInstanceError):
        seg.kind = "quickshift"  # type: ignore[misc]
    assert seg.describe() == {"kind": "slic", "params": {"n_segments": 10}}
    assert seg == Segmentation("slic", {"n_segments": 10})


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"kind: unknown segmentation 'watershed'.*slic"):
        Segmentation("watershed")
    with pytest.raises(ValueError, match=r"params: unknown slic parameter\(s\) \['nsegments'\].*n_segments"):
        Segmentation("slic", {"nsegments": 5})(_image())
    with pytest.raises(ValueError, match=r"image: expected an \(H, W, 3\) image"):
        Segmentation("slic")(np.zeros((8, 8), np.uint8))
    with pytest.raises(TypeError, match="params: expected a mapping"):
        Segmentation("slic", [1, 2])  # type: ignore[arg-type]


def test_relabel() -> None:
    out = relabel(np.array([[5, 5], [9, 2]]), (2, 2))
    np.testing.assert_array_equal(out, [[1, 1], [2, 0]])
    assert out.dtype == np.int32
    with pytest.raises(ValueError, match="segmentation: expected labels of shape"):
        relabel(np.zeros((3, 3)), (2, 2))


def test_as_segmenter_forms() -> None:
    fn, desc = as_segmenter(None)
    assert fn is DEFAULT_SEGMENTATION and desc == DEFAULT_SEGMENTATION.describe()
    fn, desc = as_segmenter("felzenszwalb")
    assert desc == {"kind": "felzenszwalb", "params": {}}
    fn, desc = as_segmenter({"kind": "slic", "params": {"n_segments": 4}})
    assert fn == Segmentation("slic", {"n_segments": 4})
    with pytest.raises(ValueError, match="segmentation: unknown key"):
        as_segmenter({"kind": "slic", "n_segments": 4})
    with pytest.raises(TypeError, match="segmentation: expected"):
        as_segmenter(3)

    def halves(img: np.ndarray) -> np.ndarray:
        lab = np.zeros(img.shape[:2], int)
        lab[:, img.shape[1] // 2 :] = 7
        return lab

    fn, _ = as_segmenter(halves)
    assert fn is halves


def test_segment_images() -> None:
    imgs = np.stack([_image(0, 16), _image(1, 16)])
    labels, desc = segment_images("slic", imgs)
    assert labels.shape == (2, 16, 16) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels[1], Segmentation("slic")(imgs[1]))
    assert desc == {"kind": "slic", "params": {}}

    shared = np.zeros((16, 16), int)
    shared[8:] = 3
    labels, desc = segment_images(shared, imgs)
    assert desc == "precomputed labels"
    np.testing.assert_array_equal(labels[0], (shared > 0).astype(np.int32))
    np.testing.assert_array_equal(labels[0], labels[1])
    with pytest.raises(ValueError, match="segmentation: expected labels of shape"):
        segment_images(np.zeros((3, 16, 16), int), imgs)


def test_library_segmentations_run_in_parallel_in_order_and_callables_serially() -> None:
    import os
    import threading

    images = np.stack([_image(seed) for seed in range(5)])
    seg = Segmentation("quickshift", {"kernel_size": 3, "max_dist": 6, "ratio": 0.5})
    parallel = map_images(seg, images, parallel=True)
    assert all(np.array_equal(a, seg(img)) for a, img in zip(parallel, images, strict=True))  # order kept
    threads: set[str] = set()

    def users(img: np.ndarray) -> np.ndarray:
        threads.add(threading.current_thread().name)
        return (img[..., 0] > 100).astype(np.int32)

    labels, desc = segment_images(users, images)
    assert threads == {threading.current_thread().name}  # a user's callable is never run on other threads
    assert labels.shape == (5, 24, 24) and desc == repr(users)
    seen: set[str] = set()
    map_images(lambda img: seen.add(threading.current_thread().name), images, parallel=True)
    if (os.cpu_count() or 1) >= 2:
        assert any(name.startswith("xai-bridge-segment") for name in seen)
