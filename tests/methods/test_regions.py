"""Semantic regions for shap's Partition explainer (``partition=``): Owen values over a segment hierarchy."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("shap")
pytest.importorskip("sklearn")

from xai_bridge.adapters.methods._regions import region_labels, region_tree, regions_of

import xai_bridge as xb

RED = (slice(20, 40), slice(30, 50))


def scene(seed: int = 0) -> np.ndarray:
    """A grey 64x64 image with mild noise, a green and a blue patch, and the red square that carries the signal."""
    rng = np.random.default_rng(seed)
    img = np.full((64, 64, 3), 120, np.int16) + rng.integers(-8, 8, (64, 64, 3))
    img[5:20, 5:25] = (40, 160, 40)
    img[45:60, 10:30] = (40, 40, 170)
    img[RED] = (250, 30, 30)
    return img.clip(0, 255).astype(np.uint8)


def red_share(x: np.ndarray) -> np.ndarray:
    """Two outputs: the share of strongly red pixels, and a second output that grows with the green channel."""
    x = np.asarray(x, np.float64)
    red = ((x[..., 0] > 200) & (x[..., 1] < 80)).mean(axis=(1, 2))
    return np.stack([red, x[..., 1].mean(axis=(1, 2)) / 255], axis=1)


SLIC = xb.Segmentation("slic", {"n_segments": 30, "start_label": 0})


def explain(images: np.ndarray, **params: object) -> xb.Explanation:
    model = xb.BlackBoxModel(red_share, class_names=["red", "green"])
    return xb.explain(model, images, "shap.Partition", targets=[[0, 1]] * len(images), **{"max_evals": 120, **params})


@pytest.mark.parametrize("masker", ["blur(8,8)", "inpaint_telea", xb.ImageMasker("constant", value=(0, 0, 0))])
def test_owen_values_are_efficient_for_every_target(masker: object) -> None:
    img = scene()
    exp = explain(img[None], partition=SLIC, masker=masker)
    full = red_share(img[None])[0]
    sums = exp.attributions[0].sum(axis=(1, 2))
    np.testing.assert_allclose(sums, full - exp.base_scores[0], atol=1e-5)


def test_values_are_constant_inside_each_region_and_regions_are_recorded() -> None:
    img = scene()
    exp = explain(img[None], partition=SLIC, masker="blur(8,8)")
    segments = exp.extras["segments"][0, 0]
    assert segments.shape == (64, 64) and segments.max() + 1 == exp.params["partition"]["count"][0]
    for t in range(2):
        values = exp.attributions[0, t]
        for r in np.unique(segments):
            inside = values[segments == r]
            assert np.ptp(inside) <= 1e-9 * max(1.0, abs(inside).max())


def test_regions_the_model_cannot_see_get_zero() -> None:
    img = scene()
    flat = xb.BlackBoxModel(lambda x: np.full((len(x), 2), 0.5), class_names=["a", "b"])
    exp = xb.explain(flat, img[None], "shap.Partition", targets=[[0, 1]], partition=SLIC, max_evals=60)
    assert np.all(exp.attributions == 0)
    # the red score does not change when a region without red pixels is masked
    exp = explain(img[None], partition=SLIC, masker="blur(8,8)", max_evals=400)
    segments = exp.extras["segments"][0, 0]
    far = segments[50:60, 50:60]  # grey corner, far from the red square and its blur
    assert np.unique(far).size >= 1 and np.all(exp.attributions[0, 0][np.isin(segments, np.unique(far))] == 0)


def test_semantic_tree_finds_the_signal_where_the_axis_aligned_tree_does_not() -> None:
    img = scene()
    semantic = explain(img[None], partition=SLIC, masker="blur(8,8)", max_evals=60).attributions[0, 0]
    axis = explain(img[None], masker="blur(8,8)", max_evals=60).attributions[0, 0]
    regions = regions_of(SLIC, img)
    signal = np.isin(regions.labels, np.unique(regions.labels[RED]))

    def share(a: np.ndarray) -> float:
        pos = np.clip(a, 0, None)
        return float(pos[signal].sum() / pos.sum())

    assert share(semantic) >= 0.9
    assert share(axis) < 0.9  # shap's halves and quarters cut the square at this budget (0.2-0.4 here)


def test_default_partition_is_shaps_axis_aligned_tree_to_the_bit() -> None:
    img = scene()
    default = explain(img[None], masker="blur(8,8)", max_evals=80)
    explicit = explain(img[None], masker="blur(8,8)", max_evals=80, partition=None)
    np.testing.assert_array_equal(default.attributions, explicit.attributions)
    assert "segments" not in default.extras


def test_several_images_equal_one_call_each() -> None:
    images = np.stack([scene(0), scene(1)[:, ::-1].copy()])
    together = explain(images, partition=SLIC, masker="blur(8,8)")
    for i in range(2):
        alone = explain(images[i : i + 1], partition=SLIC, masker="blur(8,8)")
        np.testing.assert_allclose(together.attributions[i], alone.attributions[0], atol=1e-7)


def test_masks_and_label_images() -> None:
    img = scene()
    red = np.zeros((64, 64), bool)
    red[RED] = True
    green = np.zeros((64, 64), bool)
    green[5:20, 5:25] = True
    exp = explain(img[None], partition=[red, green], masker="blur(8,8)")
    segments = exp.extras["segments"][0, 0]
    assert np.unique(segments).size == 3  # the two masks and the rest of the image
    assert exp.attributions[0, 0][red].sum() == pytest.approx(exp.attributions[0, 0].sum(), abs=1e-6)
    labels = np.zeros((64, 64), np.int64)
    labels[red] = 7
    labels[green] = 3
    by_labels = explain(img[None], partition=labels, masker="blur(8,8)")
    np.testing.assert_allclose(by_labels.attributions, exp.attributions, atol=1e-7)


def test_boxes_are_regions() -> None:
    img = scene()
    exp = explain(img[None], partition=[xb.Box(30, 20, 50, 40), xb.Box(5, 5, 25, 20)], masker="blur(8,8)")
    segments = exp.extras["segments"][0, 0]
    assert np.unique(segments).size == 3 and np.unique(segments[RED]).size == 1
    detector_output = {"boxes": np.array([[30.0, 20, 50, 40]]), "labels": np.array([1]), "scores": np.array([0.9])}
    same = explain(img[None], partition=detector_output, masker="blur(8,8)")
    assert np.unique(same.extras["segments"][0, 0]).size == 2
    with pytest.raises(xb.ParameterError, match=r"partition\[0\]: box \(70.0, 70.0, 80.0, 80.0\) has no pixel inside"):
        explain(img[None], partition=[xb.Box(70, 70, 80, 80)], max_evals=20)


def test_overlapping_masks_give_each_pixel_to_the_smallest_mask() -> None:
    img = scene()
    whole = np.zeros((64, 64), bool)
    whole[10:50, 10:50] = True
    part = np.zeros((64, 64), bool)
    part[20:30, 20:30] = True
    labels, _ = region_labels([whole, part], img)
    assert np.unique(labels[part]).size == 1 and np.unique(labels[whole & ~part]).size == 1
    assert labels[25, 25] != labels[45, 45] != labels[0, 0]


def test_tree_only_merges_adjacent_regions() -> None:
    labels = np.repeat(np.arange(4), 16).reshape(1, 64).repeat(8, axis=0)  # four vertical stripes 0|1|2|3
    img = np.zeros((8, 64, 3), np.uint8)
    img[:, :16] = 200  # stripes 0 and 3 share a colour but do not touch
    img[:, 48:] = 200
    img[:, 16:48] = 20
    tree = region_tree(img, labels.astype(np.int32))
    assert tree.shape == (3, 4) and np.all(tree[:, 2] >= 0) and tree[-1, 3] == 4
    members = {i: {i} for i in range(4)}
    for k, (a, b, _, _) in enumerate(tree):
        merged = members[int(a)] | members[int(b)]
        assert merged in ({0, 1}, {1, 2}, {2, 3}, {0, 1, 2}, {1, 2, 3}, {0, 1, 2, 3})
        members[4 + k] = merged


@pytest.mark.parametrize(
    ("partition", "match"),
    [
        (np.zeros((10, 10), bool)[None], r"partition\[0\]: expected a bool mask of shape \(64, 64\)"),
        ([np.zeros((64, 64), bool)], r"partition\[0\]: the mask is empty"),
        ([], r"partition: expected at least one bool mask"),
        (np.zeros((64, 64), np.int32), r"partition: expected at least 2 regions, got 1"),
        (np.ones((64, 64), bool)[None], r"partition: expected at least 2 regions, got 1"),
        (lambda image: np.random.default_rng(0).random(image.shape[:2]), r"expected integer labels, got float64"),
        (np.zeros((64, 64), np.float32), r"partition: expected integer labels, got float32"),
        (np.zeros((32, 64), np.int32), r"partition: expected integer labels of shape \(64, 64\)"),
    ],
)
def test_bad_partitions_are_one_line(partition: object, match: str) -> None:
    with pytest.raises(xb.ParameterError, match=match) as info:
        explain(scene()[None], partition=partition, max_evals=20)
    assert "\n" not in str(info.value)
