"""Slices of an Explanation share its read-only arrays (no copy), and nothing a caller holds can change them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_explanation import make_explanation

from xai_bridge import Explanation

ARRAYS = ("attributions", "images", "targets", "target_names", "scores", "raw", "base_scores")


def _arrays(exp: Explanation) -> dict[str, np.ndarray]:
    found = {name: getattr(exp, name) for name in ARRAYS}
    return {**found, **{f"extras[{k}]": v for k, v in exp.extras.items()}}


@pytest.mark.parametrize("key", [0, -1, slice(0, 1), (slice(None), slice(0, 2)), (1, 2), [0, 2], np.array([1])])
def test_a_slice_is_a_view_of_every_array(key: object) -> None:
    exp = make_explanation(n=3, t=3)
    part = exp[key]  # type: ignore[index]
    mine, parents = _arrays(part), _arrays(exp)
    for name, arr in mine.items():
        assert np.shares_memory(arr, parents[name]), name
        assert not arr.flags.writeable, name
    # the values are those numpy's own indexing gives
    img, tgt = key if isinstance(key, tuple) else (key, slice(None))
    rows = np.atleast_1d(np.arange(3)[img])  # type: ignore[index]
    cols = np.atleast_1d(np.arange(3)[tgt])  # type: ignore[index]
    np.testing.assert_array_equal(part.attributions, exp.attributions[rows][:, cols])
    np.testing.assert_array_equal(part.images, exp.images[rows])
    np.testing.assert_array_equal(part.target_names, exp.target_names[rows][:, cols])


def test_positions_that_are_not_a_slice_copy_and_still_equal_numpys() -> None:
    exp = make_explanation(n=3, t=3)
    for key in ([2, 0], [0, 0], [0, 1, 2, 2]):
        part = exp[key]
        assert not np.shares_memory(part.attributions, exp.attributions)
        np.testing.assert_array_equal(part.attributions, exp.attributions[key])


def test_a_slice_cannot_be_changed_through_its_parent_or_through_itself() -> None:
    exp = make_explanation(n=2, t=3)
    part = exp[1, :2]
    before = part.attributions.copy()
    with pytest.raises(ValueError):
        exp.attributions[1, 0, 0, 0] = 99.0  # the parent's arrays are read-only: the slice's memory cannot move
    with pytest.raises(ValueError):
        part.attributions[0, 0, 0, 0] = 99.0
    with pytest.raises(ValueError):
        part.attributions.setflags(write=True)  # a view of read-only memory cannot be made writeable
    np.testing.assert_array_equal(part.attributions, before)


def test_arrays_from_outside_are_still_copied() -> None:
    exp = make_explanation(n=1, t=1, raw=False)
    mine = np.array(exp.attributions)  # writeable, owned by the caller
    mine.setflags(write=False)  # read-only now, but its owner may make it writeable again
    made = dataclasses.replace(exp, attributions=mine)
    assert not np.shares_memory(made.attributions, mine)
    mine.setflags(write=True)
    mine[...] = 5.0
    assert not (made.attributions == 5.0).any()
    unfrozen = make_explanation(n=2, t=1, raw=False)
    unfrozen.attributions.setflags(write=True)  # a caller who unfreezes an Explanation's own array
    assert not np.shares_memory(unfrozen[0].attributions, unfrozen.attributions)


def test_a_large_slice_allocates_no_pixels() -> None:
    import tracemalloc

    n, t, h, w = 2, 2, 1000, 1000  # 16 MB of maps, 6 MB of images
    exp = Explanation(
        attributions=np.ones((n, t, h, w), np.float32),
        images=np.zeros((n, h, w, 3), np.uint8),
        targets=np.zeros((n, t)),
        target_names=[["a", "b"]] * n,
        scores=np.zeros((n, t)),
        method="builtin.Saliency",
        library="builtin",
    )
    tracemalloc.start()  # numpy reports its allocations to tracemalloc
    try:
        part = exp[1, 1:]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak  # a copy would be 4 MB of maps and 3 MB of image
    assert np.shares_memory(part.attributions, exp.attributions) and np.shares_memory(part.images, exp.images)
