"""RISE: masks as in the authors' code, exact accumulation, localisation, seeding, batching."""

from __future__ import annotations

import numpy as np
import pytest
from xai_bridge.adapters.methods.builtin import linear_resize_matrix, sample_masks
from xai_bridge.adapters.models import BlackBoxModel

import xai_bridge as xb


@pytest.mark.parametrize("size, grid", [((24, 24), 7), ((40, 48), (5, 6)), ((13, 29), 3)])
def test_masks_match_the_reference_implementation(size, grid) -> None:
    """Petsiuk et al.'s code: resize(grid, (s+1)*cell, order=1, mode='reflect') cropped at the shift."""
    from skimage.transform import resize

    masks = sample_masks(30, size, grid, p1=0.4, seed=3)
    got = masks.masks()
    gh, gw = masks.grids.shape[1:]
    for k in range(len(masks)):
        up = resize(
            masks.grids[k].astype(np.float64),
            ((gh + 1) * masks.cell[0], (gw + 1) * masks.cell[1]),
            order=1,
            mode="reflect",
            anti_aliasing=False,
        )
        dy, dx = masks.shifts[k]
        assert np.allclose(got[k], up[dy : dy + size[0], dx : dx + size[1]], atol=1e-6)
    assert masks.cell == (-(-size[0] // gh), -(-size[1] // gw))
    assert masks.shifts.min() >= 0 and np.all(masks.shifts < np.array(masks.cell))
    assert len(np.unique(masks.shifts, axis=0)) > 1


def test_resize_matrix_is_linear_with_mirrored_edges() -> None:
    m = linear_resize_matrix(3, 12)
    assert np.allclose(m.sum(axis=1), 1.0)
    assert np.allclose(
        m @ np.array([0.0, 1.0, 0.0]),
        [0.375, 0.125, 0.125, 0.375, 0.625, 0.875, 0.875, 0.625, 0.375, 0.125, 0.125, 0.375],
    )


def test_saliency_equals_the_formula_on_a_one_pixel_model() -> None:
    """f(x) = x[0, 0, red] / 255, so saliency = sum_k round(255 M_k(0,0)) / 255 * M_k / (N p1)."""
    img = np.full((1, 16, 20, 3), 255, np.uint8)

    def red_corner(x: np.ndarray) -> np.ndarray:
        return np.stack([x[:, 0, 0, 0] / 255.0, np.ones(len(x))], axis=1)

    exp = xb.explain(BlackBoxModel(red_corner), img, "rise", targets=[[0, 1]], seed=5, n_masks=64, grid=4, p1=0.5)
    masks32 = sample_masks(64, (16, 20), 4, 0.5, seed=5).masks()
    f = np.rint(np.float32(255) * masks32[:, 0, 0]).astype(np.float64) / 255.0  # the uint8 masked pixel
    masks = masks32.astype(np.float64)
    expected0 = np.einsum("k,khw->hw", f, masks) / (64 * 0.5)
    expected1 = masks.sum(axis=0) / (64 * 0.5)  # a constant model: the mean mask over p1
    assert np.allclose(exp.attributions[0, 0], expected0, atol=1e-5)
    assert np.allclose(exp.attributions[0, 1], expected1, atol=1e-5)
    assert exp.n_model_evals == 64 and exp.seed == 5
    assert exp.params == {"n_masks": 64, "grid": [4, 4], "p1": 0.5, "baseline": 0}


def test_saliency_concentrates_on_the_quadrant_the_model_reads() -> None:
    def top_left(x: np.ndarray) -> np.ndarray:
        return x[:, :12, :12].mean(axis=(1, 2, 3))[:, None] / 255.0

    img = np.full((1, 24, 24, 3), 200, np.uint8)
    sal = xb.explain(BlackBoxModel(top_left), img, "rise", targets=0, n_masks=2000, grid=6).attributions[0, 0]
    quadrants = [sal[:12, :12].mean(), sal[:12, 12:].mean(), sal[12:, :12].mean(), sal[12:, 12:].mean()]
    assert quadrants[0] > max(quadrants[1:]) + 0.02
    assert sal[2:10, 2:10].min() > sal[14:].max()


def test_seeded_batched_and_independent_of_other_images(rgb_images) -> None:
    calls: list[int] = []

    def fn(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return np.stack([x[..., 0].mean((1, 2)), x[:, :10, :10].mean((1, 2, 3)), x[..., 2].mean((1, 2))], axis=1)

    model = BlackBoxModel(fn, batch_size=16)
    a = xb.explain(model, rgb_images, "rise", targets=[[0, 1], [2, 1]], seed=1, n_masks=40, grid=5)
    assert calls[1:] == [16] * 5  # 80 masked images in batches of 16 after the prediction pass
    assert a.n_model_evals == 2 * 40
    b = xb.explain(model, rgb_images, "rise", targets=[[0, 1], [2, 1]], seed=1, n_masks=40, grid=5)
    assert np.array_equal(a.attributions, b.attributions)
    c = xb.explain(model, rgb_images, "rise", targets=[[0, 1], [2, 1]], seed=2, n_masks=40, grid=5)
    assert not np.allclose(a.attributions, c.attributions)
    single = xb.explain(model, rgb_images[1:], "rise", targets=[[2, 1]], seed=1, n_masks=40, grid=5)
    assert np.allclose(single.attributions[0], a.attributions[1], rtol=1e-6, atol=1e-6)


def test_baseline_fills_masked_pixels() -> None:
    def brightness(x: np.ndarray) -> np.ndarray:
        return x.mean(axis=(1, 2, 3))[:, None]

    img = np.full((1, 12, 12, 3), 90, np.uint8)
    same = xb.explain(BlackBoxModel(brightness), img, "rise", targets=0, n_masks=30, baseline=90)
    masks = sample_masks(30, (12, 12), 7, 0.5, seed=0).masks().astype(np.float64)
    assert np.allclose(same.attributions[0, 0], 90 * masks.sum(0) / 15, atol=1e-4)  # nothing changes
    mean = xb.explain(BlackBoxModel(brightness), img, "rise", targets=0, n_masks=30, baseline="mean")
    assert np.array_equal(mean.attributions, same.attributions)


def test_rise_errors_name_the_argument(rgb_images) -> None:
    model = BlackBoxModel(lambda x: x.mean(axis=(1, 2)))
    with pytest.raises(ValueError, match="p1"):
        xb.explain(model, rgb_images, "rise", targets=0, p1=0)
    with pytest.raises(ValueError, match="grid"):
        xb.explain(model, rgb_images, "rise", targets=0, grid=(2, 0))
    with pytest.raises(ValueError, match="baseline"):
        xb.explain(model, rgb_images, "rise", targets=0, baseline=300)
    with pytest.raises(TypeError, match="n_masks"):
        xb.explain(model, rgb_images, "rise", targets=0, masks=3)


def test_masked_images_are_the_bytes_of_the_numpy_formula() -> None:
    from xai_bridge.adapters.methods.builtin._rise import _rise_masked, sample_masks

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 12, 3)).astype(np.uint8)
    image[0, :, :] = (1, 3, 5)  # with fill 0 and mask 0.5: 0.5, 1.5, 2.5, ties rounded half to even
    fill = np.zeros((1, 1, 3), np.float32)
    masks = sample_masks(20, (16, 12), 4, 0.5, 3).masks()
    masks[:, 0, :] = 0.5
    for f in (fill, rng.uniform(0, 255, 3).astype(np.float32)[None, None, :]):
        want = np.multiply(masks[..., None], image.astype(np.float32) - f)
        want += f
        got = _rise_masked(image, f, masks)
        assert got.dtype == np.uint8 and np.array_equal(got, np.rint(want).astype(np.uint8))
    assert _rise_masked(image, fill, masks)[0, 0, 0].tolist() == [0, 2, 2]
