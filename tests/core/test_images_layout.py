"""load_images refuses a shape whose channel axis is implausible instead of misreading it (issue 29, point 3)."""

from __future__ import annotations

import numpy as np
import pytest

import xai_bridge as xb


@pytest.mark.parametrize("shape", [(224, 3, 224), (224, 1, 224), (64, 4, 48), (8, 3, 8)])
def test_a_middle_channel_axis_asks_for_layout(shape: tuple[int, int, int]) -> None:
    with pytest.raises(xb.ImageInputError, match=r"middle axis looks like colour channels; pass layout='NHW'") as err:
        xb.load_images(np.zeros(shape, np.uint8))
    assert "\n" not in str(err.value) and f"shape {shape}" in str(err.value)
    torch = pytest.importorskip("torch")
    with pytest.raises(xb.ImageInputError, match="pass layout="):
        xb.load_images(torch.zeros(shape, dtype=torch.uint8))


def test_the_fixes_the_message_names_work() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    transposed = np.ascontiguousarray(np.moveaxis(image, -1, 1))  # (32, 3, 40): H, C, W
    np.testing.assert_array_equal(xb.load_images(np.moveaxis(transposed, 1, -1))[0], image)
    gray = xb.load_images(transposed, layout="NHW")  # if they really are gray images, layout= says so
    assert gray.shape == (32, 3, 40, 3)
    np.testing.assert_array_equal(gray[..., 0], transposed)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((5, 3, 6), (5, 3, 6, 3)),  # small outer axes: a batch of small gray images, as before
        ((7, 4, 200), (7, 4, 200, 3)),
        ((20, 30, 40), (20, 30, 40, 3)),  # no axis of 1, 3 or 4: gray images
        ((20, 30, 3), (1, 20, 30, 3)),  # HWC
        ((3, 20, 30), (1, 20, 30, 3)),  # CHW
        ((2, 3, 20, 30), (2, 20, 30, 3)),  # NCHW
    ],
)
def test_plausible_shapes_are_read_as_before(shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    assert xb.load_images(np.zeros(shape, np.uint8)).shape == expected
