"""explain_caption and CaptionScoreModel: per-token explanations of captions.

The loopback server's captioner picks one word per image quadrant
("a {TL} {TR} near a {BL} {BR}", bright or dark), so blacking out the
top-right quadrant of a bright image turns "dog" into "cat": the map of
"dog" must lie in that quadrant and nowhere else.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from caption_server import rule_caption  # noqa: E402
from helpers import REPO, random_images  # noqa: E402
from hf_tiny import TINY_VIT_PREPROCESS, build_bart, build_tokenizer, build_vit_gpt2  # noqa: E402
from xai_bridge.adapters.captioners import AzureVisionV31Captioner, RetryPolicy  # noqa: E402
from xai_bridge.adapters.captioners.local import FunctionCaptioner, TransformersCaptioner  # noqa: E402
from xai_bridge.adapters.captioners.scorers import TeacherForcingScorer, WordMatchScorer  # noqa: E402
from xai_bridge.adapters.methods.builtin import sliding_windows  # noqa: E402

import xai_bridge as xb  # noqa: E402
from xai_bridge.captions import CaptionScoreModel, explain_caption, fit_max_side  # noqa: E402

pytestmark = pytest.mark.timeout(120)

BRIGHT = np.full((32, 32, 3), 230, np.uint8)  # "a blue dog near a white car"
TR = (slice(0, 16), slice(16, 32))


def quadrant_image(size: int = 32) -> np.ndarray:
    """Bright quadrants of four different colours (so segmenters split them)."""
    img = np.zeros((size, size, 3), np.uint8)
    h = size // 2
    img[:h, :h] = (255, 200, 200)
    img[:h, h:] = (200, 255, 200)
    img[h:, :h] = (200, 200, 255)
    img[h:, h:] = (255, 255, 200)
    return img


@pytest.fixture(scope="module")
def bart(tok):
    return build_bart(len(tok))


class CountingCaptioner(FunctionCaptioner):
    """The rule captioner, counting the images it is asked to caption."""

    def __init__(self) -> None:
        super().__init__(rule_caption, name="rule_caption")
        self.images = 0

    def caption(self, images: np.ndarray) -> list[str]:
        self.images += len(images)
        return super().caption(images)


# ------------------------------------------------------------------ the model
def test_caption_score_model_is_a_scores_model_with_token_outputs():
    cap = CountingCaptioner()
    model = CaptionScoreModel(cap, WordMatchScorer(), rule_caption(BRIGHT), reference_image=BRIGHT)
    assert isinstance(model, xb.Model) and model.output_kind is xb.OutputKind.SCORES
    assert model.class_names == ["a", "blue", "dog", "near", "a", "white", "car"]
    dark_tr = BRIGHT.copy()
    dark_tr[TR] = 0
    batch = np.stack([BRIGHT, dark_tr, dark_tr, BRIGHT])
    out = model.predict(batch)
    np.testing.assert_array_equal(out, [[1] * 7, [1, 1, 0, 1, 1, 1, 1], [1, 1, 0, 1, 1, 1, 1], [1] * 7])
    assert cap.images == 1  # the reference image is known; the repeat is memoised
    model.predict(batch)
    assert cap.images == 1
    assert model.captions == {"a blue cat near a white car": 1, "a blue dog near a white car": 1}


def test_caption_score_model_needs_a_scorer_unless_self_scoring():
    with pytest.raises(TypeError, match="scorer"):
        CaptionScoreModel(rule_caption, None, "a cat")
    with pytest.raises(ValueError, match="no tokens"):
        CaptionScoreModel(rule_caption, WordMatchScorer(), "  ")


# ------------------------------------------------------------------ occlusion, exact
def test_occlusion_localises_each_word_exactly():
    [exp] = explain_caption(
        rule_caption, BRIGHT, "builtin.Occlusion", scorer=WordMatchScorer(), window=16, stride=16, baseline=0
    )
    assert exp.attributions.shape == (1, 7, 32, 32)
    assert exp.target_names.tolist() == [["a", "blue", "dog", "near", "a", "white", "car"]]
    assert exp.targets.tolist() == [list(range(7))]  # word positions for a vocabulary-free scorer
    np.testing.assert_array_equal(exp.scores, np.ones((1, 7)))
    top, bottom, left, right = slice(0, 16), slice(16, 32), slice(0, 16), slice(16, 32)
    expected = {1: (top, left), 2: (top, right), 5: (bottom, left), 6: (bottom, right)}  # blue, dog, white, car
    for t in range(7):
        want = np.zeros((32, 32), np.float32)
        if t in expected:
            want[expected[t]] = 1.0
        np.testing.assert_array_equal(exp.attributions[0, t], want)
    assert exp.params["caption"] == "a blue dog near a white car"
    assert exp.params["captioner"] == {"type": "FunctionCaptioner", "function": "rule_caption", "batched": False}
    assert exp.params["scorer"] == {"type": "WordMatchScorer"}
    assert exp.n_model_evals == 1 + 4  # occlusion's base image, then 4 windows


# ------------------------------------------------------------------ remote + teacher forcing
def test_remote_captioner_with_teacher_forcing(server, tok, bart, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    image = random_images((64, 64, 3))
    image[:32, 32:] = 250  # top-right bright: "dog"
    scorer = TeacherForcingScorer(bart, tok)
    cache = tmp_path / "captions.sqlite"

    def run():
        with AzureVisionV31Captioner(server.url, key=server.key, cache=cache) as cap:
            return explain_caption(cap, image, "builtin.Occlusion", scorer=scorer, window=32, stride=32)[0]

    exp = run()
    caption = rule_caption(image)
    ref = scorer.tokenize(caption)
    assert exp.attributions.shape == (1, len(ref), 64, 64)
    assert exp.target_names.tolist() == [list(ref.names)] and not any("Ġ" in n for n in ref.names)
    assert exp.targets.tolist() == [list(ref.ids)]
    base = scorer.score(ref, [caption])[0]
    np.testing.assert_allclose(exp.scores[0], base, atol=1e-6)
    for y, x in sliding_windows(64, 64, (32, 32), (32, 32)):  # the map is the drop, window by window
        occluded = image.copy()
        occluded[y : y + 32, x : x + 32] = 0
        drop = base - scorer.score(ref, [rule_caption(occluded)])[0]
        np.testing.assert_allclose(exp.attributions[0, :, y + 5, x + 5], drop, atol=1e-5)
    # every distinct image answered exactly once: the caption, then 4 occluded images
    assert server.requests == 5 and len(server.answered) == 5 and set(server.answered.values()) == {1}
    assert exp.params["captioner"]["type"] == "AzureVisionV31Captioner"
    assert exp.params["scorer"]["kind"] == "seq2seq"
    # a re-run with the cache makes zero requests and gives the same explanation
    again = run()
    assert server.requests == 5
    np.testing.assert_array_equal(again.attributions, exp.attributions)
    # the key is nowhere: params, saved file, logs
    saved = exp.save(tmp_path / "exp.npz")
    assert server.key.encode() not in saved.read_bytes()
    assert server.key not in json.dumps(dict(exp.params)) + repr(exp)
    assert server.key not in caplog.text
    loaded = xb.Explanation.load(saved)
    assert loaded.params["caption"] == caption and loaded == exp


def test_faults_during_an_explanation_cost_one_answer_per_image(server, tmp_path):
    server.inject("429", "500", "timeout", "malformed", "503")
    server.hang = 0.6
    with AzureVisionV31Captioner(
        server.url, key=server.key, cache=None, timeout=(2.0, 0.3), retry=RetryPolicy(backoff=0.01, seed=0)
    ) as cap:
        [exp] = explain_caption(
            cap, quadrant_image(64), "builtin.Occlusion", scorer=WordMatchScorer(), window=32, stride=16, baseline=0
        )
    distinct = 1 + len(sliding_windows(64, 64, (32, 32), (16, 16)))  # the caption, then 9 windows
    assert len(server.answered) == distinct and set(server.answered.values()) == {1}
    assert server.requests == distinct + 5
    dog = exp.attributions[0, 2]  # windows covering half the top-right quadrant or more turn "dog" into "cat"
    assert dog[:16, 48:].min() > 0 and dog[48:].max() == 0 and dog[:, :16].max() == 0


# ------------------------------------------------------------------ local model, its own head
def test_local_captioner_scored_by_its_own_language_head():
    causal = build_tokenizer(special_template=False)
    model = build_vit_gpt2(len(causal))
    cap = TransformersCaptioner(model, causal, preprocess=TINY_VIT_PREPROCESS, generate_kwargs={"max_new_tokens": 4})
    image = quadrant_image(32)
    [exp] = explain_caption(cap, image, "builtin.Occlusion", window=16, stride=16, baseline=0)
    tokens = cap.caption_tokens(image[None])[0]
    assert exp.targets.tolist() == [list(tokens.ids)] and exp.target_names.tolist() == [list(tokens.names)]
    assert exp.params["scorer"] == "captioner's own language head"
    base = cap.score_images(tokens, image[None])[0]
    np.testing.assert_allclose(exp.scores[0], base, atol=1e-6)
    occluded = []
    for y, x in sliding_windows(32, 32, (16, 16), (16, 16)):
        img = image.copy()
        img[y : y + 16, x : x + 16] = 0
        occluded.append(img)
    drops = base - cap.score_images(tokens, np.stack(occluded))
    for k, (y, x) in enumerate(sliding_windows(32, 32, (16, 16), (16, 16))):
        np.testing.assert_allclose(exp.attributions[0, :, y, x], drops[k], atol=1e-5)


# ------------------------------------------------------------------ other methods
def _require(method: str) -> None:
    if method not in xb.available_methods():
        pytest.skip(f"{method} is not available in this environment")


def test_shap_partition_owen_values_localise_and_add_up():
    _require("shap.Partition")
    [exp] = explain_caption(
        rule_caption, BRIGHT, "shap.Partition", scorer=WordMatchScorer(), budget=120, masker=_constant_black()
    )
    assert exp.attributions.shape == (1, 7, 32, 32) and exp.params["max_evals"] == 120
    dog = exp.attributions[0, 2]
    outside = dog.copy()
    outside[TR] = 0
    assert dog[TR].sum() == pytest.approx(1.0, abs=1e-5)  # efficiency: f(x) - f(all masked) = 1 - 0
    np.testing.assert_allclose(outside, 0.0, atol=1e-6)  # dummy pixels get nothing
    np.testing.assert_allclose(exp.attributions[0].sum(axis=(1, 2)), exp.scores[0] - exp.base_scores[0], atol=1e-5)
    np.testing.assert_allclose(exp.attributions[0, 0], 0.0, atol=1e-6)  # "a" never changes


def _constant_black():
    from xai_bridge.options import ImageMasker, MaskKind

    return ImageMasker(MaskKind.CONSTANT, value=0.0)


def test_shap_partition_through_the_loopback_server(server):
    _require("shap.Partition")
    with AzureVisionV31Captioner(server.url, key=server.key, cache=None) as cap:
        [exp] = explain_caption(
            cap,
            quadrant_image(64),
            "shap.Partition",
            scorer=WordMatchScorer(),
            budget=80,
            masker=_constant_black(),
            batch_size=40,
        )
    assert exp.attributions.shape == (1, 7, 64, 64)
    assert set(server.answered.values()) == {1} and server.requests == len(server.answered)
    assert server.requests <= exp.n_model_evals
    assert exp.attributions[0, 2][:32, 32:].sum() == pytest.approx(1.0, abs=1e-5)


def test_lime_and_rise_localise_the_word():
    image = quadrant_image(32)

    def quadrants(img):
        labels = np.zeros(img.shape[:2], np.int64)
        labels[:16, 16:], labels[16:, :16], labels[16:, 16:] = 1, 2, 3
        return labels

    runs = []
    if "lime.Lime" in xb.available_methods():
        runs.append(("lime", {"budget": 64, "hide_color": 0, "segmentation": quadrants}))
    if "builtin.RISE" in xb.available_methods():
        runs.append(("rise", {"budget": 200, "grid": 4}))
    if not runs:
        pytest.skip("neither lime nor rise is available")
    for method, params in runs:
        [exp] = explain_caption(rule_caption, image, method, scorer=WordMatchScorer(), seed=3, **params)
        assert exp.attributions.shape == (1, 7, 32, 32), method
        assert exp.params[xb.default_registry().spec(exp.method).budget] == params["budget"], method  # aliases resolve
        dog = exp.attributions[0, 2]
        outside = np.concatenate([dog[16:].ravel(), dog[:16, :16].ravel()])
        assert dog[TR].mean() > outside.max(), method
        [again] = explain_caption(rule_caption, image, method, scorer=WordMatchScorer(), seed=3, **params)
        np.testing.assert_array_equal(again.attributions, exp.attributions)  # seeded


# ------------------------------------------------------------------ inputs and errors
def test_several_images_of_different_sizes_give_one_explanation_each():
    small, large = BRIGHT, np.zeros((48, 40, 3), np.uint8)
    exps = explain_caption(
        rule_caption,
        [small, large],
        "builtin.Occlusion",
        scorer=WordMatchScorer(),
        targets=["a blue dog", "a red cat near a green tree"],
    )
    assert [e.attributions.shape for e in exps] == [(1, 3, 32, 32), (1, 7, 48, 40)]
    assert exps[1].params["caption"] == "a red cat near a green tree"


def test_explain_caption_errors():
    with pytest.raises(ValueError, match="captions"):
        explain_caption(rule_caption, BRIGHT, "builtin.Occlusion", scorer=WordMatchScorer(), targets=["a", "b"])
    with pytest.raises(TypeError, match="scorer"):
        explain_caption(rule_caption, BRIGHT, "builtin.Occlusion")
    with pytest.raises(ValueError, match="no tokens"):
        explain_caption(lambda img: "", BRIGHT, "builtin.Occlusion", scorer=WordMatchScorer())
    with pytest.raises(TypeError, match="unknown parameter"):
        explain_caption(rule_caption, BRIGHT, "builtin.Occlusion", scorer=WordMatchScorer(), bogus=1)


def test_fit_max_side_keeps_the_aspect_ratio_like_seed_000():
    img = np.zeros((1000, 600, 3), np.uint8)
    assert fit_max_side(img, 500).shape == (500, 300, 3)
    assert fit_max_side(np.zeros((300, 700, 3), np.uint8), 500).shape == (214, 500, 3)
    assert fit_max_side(BRIGHT, 500) is BRIGHT and fit_max_side(img, None) is img
    [exp] = explain_caption(
        rule_caption, np.full((80, 40, 3), 230, np.uint8), "builtin.Occlusion", scorer=WordMatchScorer(), max_side=40
    )
    assert exp.images.shape == (1, 40, 20, 3)


# ------------------------------------------------------------------ the example
def test_seed000_example_runs_against_the_loopback_server(server, tok, bart, tmp_path, monkeypatch, capsys):
    import importlib.util

    from PIL import Image

    model_dir = tmp_path / "tiny-bart"
    bart.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    paths = []
    for i, img in enumerate([quadrant_image(64), np.full((60, 90, 3), 30, np.uint8)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(img).save(paths[-1])
    spec = importlib.util.spec_from_file_location("seed000_caption", REPO / "examples" / "seed000_caption.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # importing runs nothing
    assert server.requests == 0
    monkeypatch.setenv("LOOPBACK_KEY", server.key)
    exps = example.main(
        [
            "--endpoint",
            server.url,
            "--key-env",
            "LOOPBACK_KEY",
            "--images",
            *map(str, paths),
            "--scorer",
            str(model_dir),
            "--max-evals",
            "40",
            "--masker",
            "blur(8,8)",
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert [e.attributions.shape[2:] for e in exps] == [(64, 64), (60, 90)]
    assert [e.params["caption"] for e in exps] == [rule_caption(quadrant_image(64)), "a red cat near a green tree"]
    assert set(server.answered.values()) == {1}
    for npz in (tmp_path / "out").iterdir():
        assert server.key.encode() not in npz.read_bytes()
    assert server.key not in capsys.readouterr().out


def test_seed000_example_on_semantic_regions(server, tok, bart, tmp_path, monkeypatch):
    """Seed 000's named improvement: the caption explained over semantic regions instead of shap's grid."""
    import importlib.util

    from PIL import Image

    model_dir = tmp_path / "tiny-bart"
    bart.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    path = tmp_path / "quadrants.png"
    Image.fromarray(quadrant_image(64)).save(path)
    spec = importlib.util.spec_from_file_location("seed000_caption", REPO / "examples" / "seed000_caption.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setenv("LOOPBACK_KEY", server.key)
    args = ["--endpoint", server.url, "--key-env", "LOOPBACK_KEY", "--images", str(path), "--scorer", str(model_dir)]
    args += ["--max-evals", "40", "--masker", "blur(8,8)", "--regions", "8", "--cache", str(tmp_path / "c.sqlite")]
    [exp] = example.main([*args, "--out", str(tmp_path / "out")])
    segments = exp.extras["segments"][0, 0]
    assert exp.params["partition"]["count"] == [len(np.unique(segments))] and len(np.unique(segments)) >= 2
    for t in range(exp.n_targets):  # one value per region, and the values add up (Owen efficiency)
        for r in np.unique(segments):
            assert np.ptp(exp.attributions[0, t][segments == r]) < 1e-6
        assert exp.attributions[0, t].sum() == pytest.approx(exp.scores[0, t] - exp.base_scores[0, t], abs=1e-4)
