"""lime: parity with lime_image called directly, extras, the mask view, seeding, batching, errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from PIL import Image
from xai_bridge.adapters.models import BlackBoxModel

import xai_bridge as xb
from xai_bridge.viz.masks import image_and_mask, ranked_superpixels, superpixel_weights

lime_image = pytest.importorskip("lime.lime_image")
from lime.wrappers.scikit_image import SegmentationAlgorithm  # noqa: E402


@pytest.fixture(scope="module")
def cats(chelsea) -> np.ndarray:
    """chelsea at 100x150 (quickshift finds ~11 superpixels) and mirrored."""
    small = np.asarray(Image.fromarray(chelsea).resize((150, 100), Image.BILINEAR))
    return np.stack([small, small[:, ::-1]])


def _lime_directly(model, image, labels, seed, segmentation, **kwargs):
    """What a user writes: lime on the float image, a predict wrapper, the same seed and superpixels."""
    explainer = lime_image.LimeImageExplainer(random_state=seed)
    return explainer.explain_instance(
        image.astype(np.float64),
        lambda b: model.predict(np.clip(np.rint(b), 0, 255).astype(np.uint8)),
        labels=labels,
        top_labels=None,
        segmentation_fn=lambda x: segmentation(x.astype(np.uint8)),
        random_seed=seed,
        **kwargs,
    )


def test_lime_matches_lime_called_directly(tiny_model, cats) -> None:
    exp = xb.explain(tiny_model, cats, "lime", targets=xb.top_k(2), seed=3, num_samples=80)
    for i in range(2):
        labels = tuple(exp.targets[i].tolist())
        # lime's default superpixels (its wrapper drops random_seed: scikit-image calls it rng now)
        quickshift = SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200, ratio=0.2, random_seed=3)
        ref = _lime_directly(tiny_model, cats[i], labels, 3, quickshift, num_samples=80, batch_size=8, hide_color=None)
        segments = exp.extras["segments"][i, 0]
        assert np.array_equal(segments, ref.segments) and segments.max() >= 5
        for j, label in enumerate(labels):
            ranked = ref.local_exp[label]
            ids = [f for f, _ in ranked]
            assert exp.extras["superpixel_order"][i, j, : len(ids)].tolist() == ids
            assert np.array_equal(exp.extras["superpixel_weights"][i, j, ids], np.float32([w for _, w in ranked]))
            assert exp.extras["intercept"][i, j] == np.float32(ref.intercept[label])
            by_id = dict(ranked)
            assert np.allclose(exp.attributions[i, j], np.vectorize(by_id.get)(ref.segments), atol=1e-7)
        # lime's ImageExplanation keeps the score and prediction of the last label only
        assert exp.extras["local_score"][i, -1] == np.float32(ref.score)
        assert exp.extras["local_pred"][i, -1] == np.float32(ref.local_pred[0])
    assert exp.n_model_evals == 2 * 80
    assert exp.seed == 3 and exp.library == "lime"
    assert exp.params["segmentation"] == {
        "kind": "quickshift",
        "params": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    }


@dataclass(frozen=True)
class _Segmentation:
    """Stands in for the project's Segmentation(kind, params) dataclass."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)


def test_slic_hide_color_and_segmentation_objects(tiny_model, cats) -> None:
    params = {"n_segments": 30, "compactness": 10, "start_label": 0}
    exp = xb.explain(
        tiny_model,
        cats,
        "lime",
        targets=[[1], [4]],
        seed=0,
        num_samples=60,
        hide_color=(0, 0, 255),
        segmentation=_Segmentation("slic", params),
        batch_size=16,
    )
    ref = _lime_directly(
        tiny_model,
        cats[1],
        (4,),
        0,
        SegmentationAlgorithm("slic", **params),
        num_samples=60,
        batch_size=16,
        hide_color=(0, 0, 255),
    )
    n = len(ref.local_exp[4])
    assert np.array_equal(
        exp.extras["superpixel_weights"][1, 0, :n], np.float32([dict(ref.local_exp[4])[k] for k in range(n)])
    )
    assert np.isnan(exp.extras["superpixel_weights"][1, 0, n:]).all()  # padding to the largest superpixel count
    assert np.all(exp.extras["superpixel_order"][1, 0, n:] == -1)
    assert exp.params["hide_color"] == [0.0, 0.0, 255.0] and exp.params["batch_size"] == 16


def test_each_image_is_independent_of_the_batch(tiny_model, cats) -> None:
    both = xb.explain(
        tiny_model, cats, "lime", targets=[[0, 2], [3, 1]], seed=5, num_samples=40, segmentation="felzenszwalb"
    )
    second = xb.explain(
        tiny_model, cats[1:], "lime", targets=[[3, 1]], seed=5, num_samples=40, segmentation="felzenszwalb"
    )
    s = second.extras["superpixel_weights"].shape[-1]
    assert np.array_equal(both.attributions[1], second.attributions[0])
    assert np.array_equal(
        both.extras["superpixel_weights"][1, :, :s], second.extras["superpixel_weights"][0], equal_nan=True
    )
    again = xb.explain(
        tiny_model, cats, "lime", targets=[[0, 2], [3, 1]], seed=5, num_samples=40, segmentation="felzenszwalb"
    )
    assert np.array_equal(both.attributions, again.attributions)
    other = xb.explain(
        tiny_model, cats, "lime", targets=[[0, 2], [3, 1]], seed=6, num_samples=40, segmentation="felzenszwalb"
    )
    assert not np.allclose(both.attributions, other.attributions)


def test_all_model_calls_are_batched_uint8(cats) -> None:
    seen: list[tuple[str, int]] = []

    def fn(x: np.ndarray) -> np.ndarray:
        seen.append((x.dtype.name, len(x)))
        return np.stack([x[..., 0].mean((1, 2)), x[:, :50].mean((1, 2, 3))], axis=1) / 255.0

    exp = xb.explain(
        BlackBoxModel(fn, batch_size=25),
        cats[:1],
        "lime",
        targets=1,
        num_samples=100,
        segmentation=_Segmentation("slic", {"n_segments": 20, "start_label": 0}),
        hide_color=0,
    )
    assert {d for d, _ in seen} == {"uint8"} and [n for _, n in seen[1:]] == [25] * 4
    assert exp.n_model_evals == 100
    segs, weights = exp.extras["segments"][0, 0], exp.extras["superpixel_weights"][0, 0]
    top = np.unique(segs[:50])
    bottom = np.setdiff1d(np.unique(segs[50:]), top)
    assert np.abs(weights[top]).mean() > 10 * np.abs(weights[bottom]).mean()  # it reads the top half only


def test_image_and_mask_equals_lime(tiny_model, cats) -> None:
    exp = xb.explain(tiny_model, cats[:1], "lime", targets=xb.top_k(2), seed=1, num_samples=80)
    quickshift = SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200, ratio=0.2, random_seed=1)
    ref = _lime_directly(
        tiny_model,
        cats[0],
        tuple(exp.targets[0].tolist()),
        1,
        quickshift,
        num_samples=80,
        batch_size=8,
        hide_color=None,
    )
    options = [
        dict(positive_only=True, num_features=5, hide_rest=True),
        dict(positive_only=True, num_features=3, hide_rest=False),
        dict(positive_only=False, negative_only=True, num_features=5),
        dict(positive_only=False, num_features=6, hide_rest=False),
        dict(positive_only=False, num_features=10, hide_rest=True, min_weight=0.01),
    ]
    for j in range(2):
        for kw in options:
            temp, mask = image_and_mask(exp, 0, j, **kw)
            ref_temp, ref_mask = ref.get_image_and_mask(int(exp.targets[0, j]), **kw)
            assert temp.dtype == np.uint8 and np.array_equal(temp, ref_temp.astype(np.uint8)), kw
            assert np.array_equal(mask, ref_mask), kw
    with pytest.raises(ValueError, match="positive_only"):
        image_and_mask(exp, positive_only=True, negative_only=True)


def test_mask_view_for_other_methods_needs_segments(tiny_model, cats) -> None:
    exp = xb.explain(tiny_model, cats[:1], "rise", n_masks=20)
    with pytest.raises(ValueError, match="segments"):
        image_and_mask(exp)
    segments = np.repeat(np.arange(4), 25)[:, None].repeat(150, axis=1).astype(np.int32)  # 4 horizontal bands
    weights = superpixel_weights(exp.attributions[0, 0], segments)
    assert np.allclose(weights, exp.attributions[0, 0].reshape(4, -1).mean(axis=1), rtol=1e-6)
    _, ranked = ranked_superpixels(exp, segments=segments)
    temp, mask = image_and_mask(exp, segments=segments, num_features=1)
    best = ranked[0][0]
    assert np.array_equal(mask, (segments == best).astype(np.int32)) and np.array_equal(temp, cats[0])


def test_lime_errors_name_the_argument(tiny_model, cats) -> None:
    with pytest.raises(ValueError, match="segmentation"):
        xb.explain(tiny_model, cats, "lime", segmentation="watershed")
    with pytest.raises(ValueError, match="segmentation"):
        xb.explain(tiny_model, cats, "lime", segmentation=_Segmentation("slic", {"n_segmentz": 3}))
    with pytest.raises(ValueError, match="hide_color"):
        xb.explain(tiny_model, cats, "lime", hide_color=300)
    with pytest.raises(ValueError, match="num_samples"):
        xb.explain(tiny_model, cats, "lime", num_samples=0)
    with pytest.raises(TypeError, match="num_samples"):
        xb.explain(tiny_model, cats, "lime", samples=10)


def test_a_users_segmentation_runs_in_the_calling_thread_library_ones_on_threads(tiny_model, cats, monkeypatch) -> None:
    import threading

    from xai_bridge.adapters.methods import _segments

    threads: set[str] = set()

    def users(img: np.ndarray) -> np.ndarray:
        threads.add(threading.current_thread().name)
        return (np.arange(img.shape[0] * img.shape[1]).reshape(img.shape[:2]) // 64).astype(np.int64)

    xb.explain(tiny_model, cats, "lime", targets=[[1], [4]], seed=0, num_samples=20, segmentation=users)
    assert threads == {threading.current_thread().name}
    seen: list[bool] = []
    real = _segments.map_images
    monkeypatch.setattr(
        "xai_bridge.adapters.methods.lime.map_images",
        lambda fn, images, parallel: seen.append(parallel) or real(fn, images, parallel),
    )
    xb.explain(tiny_model, cats, "lime", targets=[[1], [4]], seed=0, num_samples=20, segmentation="slic")
    xb.explain(tiny_model, cats, "lime", targets=[[1], [4]], seed=0, num_samples=20, segmentation=users)
    assert seen == [True, False]
