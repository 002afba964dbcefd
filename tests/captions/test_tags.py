"""Cloud vision tags as black-box classifiers, and the dry run that counts their paid calls.

The loopback server tags an image with one word per quadrant (see
:func:`caption_server.rule_tags`): the top-right quadrant says ``cat`` when
dark and ``dog`` when bright, with a confidence growing with its distance
from mid-grey. So the map of ``dog`` must lie in the top-right quadrant, and
every request the server counts is an image the client sent.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

pytest.importorskip("requests")

from caption_server import CaptionServer, rule_tags
from helpers import REPO
from xai_bridge.adapters.captioners import (
    AzureVision40Tagger,
    AzureVisionV31Tagger,
    MalformedAnswer,
    RemoteCaptionError,
    RetryPolicy,
    tag_list,
)
from xai_bridge.adapters.methods.builtin import sliding_windows

import xai_bridge as xb
from xai_bridge.captions import TagModel, estimate_calls

pytestmark = pytest.mark.timeout(120)

FAST = RetryPolicy(backoff=0.01, seed=0)
TAGGERS = {"v31": AzureVisionV31Tagger, "v40": AzureVision40Tagger}


def dog_image(size: int = 64, seed: int = 0) -> np.ndarray:
    """Noise (so no two masked images coincide), the top-right quadrant bright: tags red, dog, green, tree."""
    img = np.random.default_rng(seed).integers(0, 120, (size, size, 3), dtype=np.uint8)
    img[: size // 2, size // 2 :] = np.random.default_rng(seed + 1).integers(200, 256, (size // 2, size // 2, 3))
    return img


def make(kind: str, srv: CaptionServer, **kwargs):
    return TAGGERS[kind](srv.url, **{"key": srv.key, "cache": None, "retry": FAST, **kwargs})


# ------------------------------------------------------------------ the protocols
@pytest.mark.parametrize("kind", sorted(TAGGERS))
def test_each_tags_protocol_returns_the_servers_tags(kind, server):
    images = np.stack([dog_image(seed=s) for s in range(3)])
    with make(kind, server) as tagger:
        found = tagger.tag(images)
    assert found == [rule_tags(img) for img in images]
    assert set(found[0]) == {"red", "dog", "green", "tree"}
    path = "/vision/v3.1/analyze" if kind == "v31" else "/computervision/imageanalysis:analyze"
    assert server.paths == {path: 3} and set(server.answered.values()) == {1}


def test_tag_answers_are_parsed_and_checked():
    assert tag_list([{"name": " dog ", "confidence": 0.5}, {"name": "dog", "confidence": 0.9}], "tags") == {"dog": 0.9}
    with pytest.raises(MalformedAnswer, match="tags is null"):
        tag_list(None, "tags")
    with pytest.raises(MalformedAnswer, match="a confidence"):
        tag_list([{"name": "dog", "confidence": None}], "tags")
    tagger = AzureVision40Tagger("http://127.0.0.1:9", key="k", cache=None)
    assert tagger._parse({"tagsResult": {"values": [{"name": "cat", "confidence": 0.75}]}}) == {"cat": 0.75}
    with pytest.raises(MalformedAnswer, match="outside"):
        tagger._validate({"cat": 1.5})


def test_malformed_tags_are_retried_then_fail_clearly(server):
    server.inject("malformed", "malformed", "malformed")
    with make("v31", server) as tagger, pytest.raises(RemoteCaptionError, match="3 malformed answers"):
        tagger.tag(dog_image()[None])


def test_a_tagger_never_takes_a_prompt(server):
    with make("v40", server) as tagger, pytest.raises(ValueError, match="prompt: AzureVision40Tagger sends no"):
        tagger._answers(dog_image()[None], prompt="what is this?")


# ------------------------------------------------------------------ the model
def test_tag_model_outputs_the_tags_of_the_unmasked_image_and_zero_for_missing_ones():
    model = TagModel(rule_tags)
    image = dog_image()
    dark = image.copy()
    dark[:32, 32:] = 0  # the top-right quadrant turns dog into cat
    first = model.predict(image[None])
    assert model.class_names == sorted(rule_tags(image), key=lambda n: (-rule_tags(image)[n], n))
    np.testing.assert_allclose(first[0], [rule_tags(image)[n] for n in model.class_names], atol=1e-6)
    out = model.predict(np.stack([dark, image]))
    dog = model.class_names.index("dog")
    assert out[0, dog] == 0.0 and out[1, dog] == first[0, dog]  # 'dog' is missing on the dark image
    assert "cat" not in model.class_names and model.output_count == 4


def test_tag_model_errors():
    with pytest.raises(xb.ModelInputError, match="tagger: expected an object with tag"):
        TagModel(42)
    with pytest.raises(xb.ParameterError, match="tags: expected distinct"):
        TagModel(rule_tags, tags=["dog", "dog"])
    with pytest.raises(xb.ModelInputError, match="found no tags"):
        TagModel(lambda img: {}).predict(dog_image()[None])
    with pytest.raises(xb.ModelInputError, match="expected a number"):
        TagModel(lambda img: {"dog": "high"}).predict(dog_image()[None])


@pytest.mark.parametrize("kind", sorted(TAGGERS))
def test_explain_a_tag_with_occlusion_localises_it_exactly(kind, server):
    image = dog_image()
    with make(kind, server) as tagger:
        exp = xb.explain(tagger, image, "builtin.Occlusion", targets="dog", window=32, stride=32, baseline=0)
    assert exp.target_names.tolist() == [["dog"]]
    assert exp.scores[0, 0] == pytest.approx(rule_tags(image)["dog"], abs=1e-6)
    dog = exp.attributions[0, 0]
    assert dog[:32, 32:].min() == pytest.approx(rule_tags(image)["dog"], abs=1e-6)  # occluding TR loses 'dog'
    assert dog[32:].max() == 0 and dog[:, :32].max() == 0
    # the unmasked image is sent once (the tags), then the 4 windows
    assert server.requests == 5 and len(server.answered) == 5 and set(server.answered.values()) == {1}


# ------------------------------------------------------------------ cost: the dry run equals the server's count
def _runs():
    runs = [("builtin.Occlusion", {"window": 16, "stride": 16, "baseline": 0}), ("builtin.RISE", {"n_masks": 24})]
    if "shap.Partition" in xb.available_methods():
        from xai_bridge.options import ImageMasker, MaskKind

        masker = ImageMasker(MaskKind.CONSTANT, value=0.0)
        runs.append(("shap.Partition", {"max_evals": 40, "masker": masker, "batch_size": 10}))
    if "lime.Lime" in xb.available_methods():
        runs.append(("lime.Lime", {"num_samples": 30}))
    return runs


@pytest.mark.parametrize(("method", "params"), _runs(), ids=[m for m, _ in _runs()])
def test_dry_run_predicts_the_paid_calls_and_a_cached_rerun_pays_nothing(method, params, server, tmp_path, capsys):
    image = dog_image()
    cache = tmp_path / "tags.sqlite"
    with make("v40", server, cache=cache) as tagger:
        estimate = estimate_calls(tagger, image, method, targets="dog", seed=1, **params)
        assert server.requests == 0  # the dry run sends nothing
        assert f"-> {estimate.calls} paid calls" in capsys.readouterr().out
        exp = xb.explain(tagger, image, method, targets="dog", seed=1, **params)
        assert server.requests == int(estimate) == estimate.calls
        assert set(server.answered.values()) == {1}  # every distinct image answered exactly once
        assert estimate.calls == estimate.distinct_images and estimate.cached == 0
        assert exp.n_model_evals + 1 >= estimate.calls  # + the call that found the tags
        # re-run from the cache: estimated free, and free
        again = estimate_calls(tagger, image, method, targets="dog", seed=1, verbose=False, **params)
        assert again.calls == 0 and again.cached == estimate.distinct_images
        rerun = xb.explain(tagger, image, method, targets="dog", seed=1, **params)
    assert server.requests == estimate.calls
    np.testing.assert_array_equal(rerun.attributions, exp.attributions)


def test_dry_run_counts_repeated_images_once_and_knows_what_a_model_has_seen(server):
    image = np.zeros((64, 64, 3), np.uint8)  # black: occluding with black repeats the unmasked image
    with make("v31", server) as tagger:
        model = TagModel(tagger)
        estimate = estimate_calls(
            model, image, "builtin.Occlusion", targets="tree", window=32, stride=32, verbose=False
        )
        assert estimate.calls == estimate.distinct_images == 1 and estimate.evaluations == 5
        xb.explain(model, image, "builtin.Occlusion", targets="tree", window=32, stride=32, baseline=0)
        assert server.requests == 1
        assert estimate_calls(model, image, "builtin.Occlusion", targets="tree", verbose=False).calls == 0
    windows = len(sliding_windows(64, 64, (16, 16), (8, 8)))
    assert estimate_calls(rule_tags, dog_image(), "builtin.Occlusion", targets="dog", window=16, stride=8).calls == (
        1 + windows
    )


def test_tagger_keys_never_leak(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with make("v31", server, cache=tmp_path / "c.sqlite") as tagger:
        exp = xb.explain(tagger, dog_image(), "builtin.Occlusion", targets="dog", window=32, stride=32)
        assert server.key not in repr(tagger) + json.dumps(tagger.describe())
    saved = exp.save(tmp_path / "exp.npz")
    assert server.key.encode() not in saved.read_bytes() + (tmp_path / "c.sqlite").read_bytes()
    assert server.key not in caplog.text


# ------------------------------------------------------------------ the example
def test_example_prints_the_estimate_then_pays_exactly_that(server, tmp_path, capsys):
    import importlib.util

    from PIL import Image

    path = REPO / "examples" / "cloud_tags.py"
    spec = importlib.util.spec_from_file_location("cloud_tags_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    Image.fromarray(dog_image()).save(tmp_path / "dog.png")
    argv = [server.url, str(tmp_path / "dog.png"), "--tag", "dog", "--key", server.key, "--method", "builtin.RISE"]
    argv += ["--max-evals", "16", "--cache", str(tmp_path / "t.sqlite")]
    assert module.main([*argv, "--dry-run"]) is None and server.requests == 0
    assert "-> 17 paid calls" in capsys.readouterr().out  # the unmasked image, then 16 masks
    exp = module.main(argv)
    assert server.requests == 17 and "paid calls: 17 (estimated 17)" in capsys.readouterr().out
    assert exp.target_names.tolist() == [["dog"]]
    module.main([*argv, "--api", "v3.1"])
    assert server.paths["/vision/v3.1/analyze"] == 17
