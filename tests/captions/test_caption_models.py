"""Caption scorers and the local transformers captioner, on tiny seeded models built from configs.

The tiny models (a byte-level BPE tokenizer trained in-process on a small
corpus, BART / GPT-2 / ViT-GPT-2 / BLIP with ``d_model=32`` and 2 layers) come
from ``tests/hf_tiny.py``. Nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from hf_tiny import (  # noqa: E402
    TINY_VIT_PREPROCESS,
    build_bart,
    build_blip,
    build_gpt2,
    build_vit_gpt2,
)
from xai_bridge.adapters._torch import hook_count  # noqa: E402
from xai_bridge.adapters.captioners.local import (  # noqa: E402
    FunctionCaptioner,
    SelfScoringCaptioner,
    TransformersCaptioner,
    as_captioner,
)
from xai_bridge.adapters.captioners.scorers import (  # noqa: E402
    CaptionTokens,
    EmbeddingSimilarityScorer,
    TeacherForcingScorer,
    TokenScore,
    WordMatchScorer,
)

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def bart(tok):
    return build_bart(len(tok))


@pytest.fixture(scope="module")
def gpt2(causal_tok):
    return build_gpt2(len(causal_tok))


@pytest.fixture(scope="module")
def vit_gpt2(causal_tok):
    return build_vit_gpt2(len(causal_tok))


REFERENCE = "a red cat near a green tree"
CAPTIONS = ["a blue dog near a white car", "a red cat", "", "a red cat near a green tree"]


# ------------------------------------------------------------------ teacher forcing
def test_teacher_forcing_seq2seq_equals_manual_log_softmax_gather(tok, bart):
    scorer = TeacherForcingScorer(bart, tok)
    ref = scorer.tokenize(REFERENCE)
    assert ref.names == ("a", "red", "cat", "near", "a", "green", "tree")  # cleaned: no 'Ġ'
    assert ref.ids == tuple(tok(REFERENCE, add_special_tokens=False)["input_ids"])
    got = scorer.score(ref, CAPTIONS)
    assert got.shape == (len(CAPTIONS), len(ref)) and got.dtype == np.float32
    ids = torch.tensor(ref.ids)
    decoder_input = torch.cat([torch.tensor([bart.config.decoder_start_token_id]), ids[:-1]])[None]
    for row, caption in zip(got, CAPTIONS, strict=False):  # one caption at a time, no padding
        enc = tok(caption, return_tensors="pt")
        with torch.no_grad():
            logits = bart(input_ids=enc["input_ids"], decoder_input_ids=decoder_input).logits[0]
        expected = torch.log_softmax(logits.double(), -1)[torch.arange(len(ids)), ids].numpy()
        np.testing.assert_allclose(row, expected, rtol=0, atol=1e-5)
    assert np.all(got < 0)
    # masked-image captions differ, so the scores differ
    assert not np.allclose(got[0], got[3])


def test_teacher_forcing_seq2seq_matches_shap_teacher_forcing(tok, bart):
    shap = pytest.importorskip("shap")
    scorer = TeacherForcingScorer(bart, tok, output="log_odds")
    ref = scorer.tokenize(REFERENCE)
    captions = [c for c in CAPTIONS if c]  # shap cannot tokenise a batch holding an empty string consistently
    shap_tf = shap.models.TeacherForcing(lambda x: list(x), similarity_model=bart, similarity_tokenizer=tok)
    expected = shap_tf(np.array(captions), np.array([REFERENCE] * len(captions)))
    assert shap_tf.output_names == list(ref.names)
    np.testing.assert_allclose(scorer.score(ref, captions), expected, rtol=0, atol=1e-5)


def test_teacher_forcing_causal_equals_manual(causal_tok, gpt2):
    scorer = TeacherForcingScorer(gpt2, causal_tok, batch_size=3)  # 2 batches, right-padded
    ref = scorer.tokenize(REFERENCE)
    got = scorer.score(ref, CAPTIONS)
    sep = causal_tok.bos_token_id
    for row, caption in zip(got, CAPTIONS, strict=False):
        context = causal_tok(caption, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([[*context, sep, *list(ref.ids)]])
        with torch.no_grad():
            log_probs = torch.log_softmax(gpt2(input_ids=ids).logits[0].double(), -1)
        expected = [log_probs[len(context) + j, tok_id].item() for j, tok_id in enumerate(ref.ids)]
        np.testing.assert_allclose(row, expected, rtol=0, atol=1e-5)


def test_teacher_forcing_output_kinds_and_batch_invariance(tok, bart):
    log_prob = TeacherForcingScorer(bart, tok, batch_size=1)
    ref = log_prob.tokenize(REFERENCE)
    lp = log_prob.score(ref, CAPTIONS).astype(np.float64)
    batched = TeacherForcingScorer(bart, tok, batch_size=64).score(ref, CAPTIONS)
    np.testing.assert_allclose(batched, lp, atol=1e-5)
    prob = TeacherForcingScorer(bart, tok, output=TokenScore.PROB).score(ref, CAPTIONS)
    np.testing.assert_allclose(prob, np.exp(lp), rtol=1e-5)
    odds = TeacherForcingScorer(bart, tok, output="log_odds").score(ref, CAPTIONS)
    np.testing.assert_allclose(odds, lp - np.log1p(-np.exp(lp)), atol=1e-4)
    assert log_prob.score(ref, []).shape == (0, len(ref))


def _warm_up(model, **inputs):
    """One plain forward pass: transformers >= 5 installs its own output-capturing hooks on first use."""
    with torch.no_grad():
        model(**inputs)
    return hook_count(model)


def test_teacher_forcing_leaves_model_state_alone(tok, bart):
    before = _warm_up(bart, input_ids=torch.tensor([[0, 5, 2]]), decoder_input_ids=torch.tensor([[2]]))
    bart.train()
    try:
        scorer = TeacherForcingScorer(bart, tok)
        scorer.score(scorer.tokenize("a cat"), ["a dog"])
        assert bart.training and all(m.training for m in bart.modules())
        assert hook_count(bart) == before
        assert all(p.requires_grad and p.grad is None for p in bart.parameters())
    finally:
        bart.eval()


def test_teacher_forcing_errors(tok, bart):
    scorer = TeacherForcingScorer(bart, tok)
    with pytest.raises(ValueError, match="reference"):
        scorer.score(scorer.tokenize(""), ["a cat"])
    with pytest.raises(TypeError, match="reference"):
        scorer.score("a cat", ["a cat"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        TeacherForcingScorer(bart, tok, batch_size=0)
    with pytest.raises(TypeError, match="model"):
        TeacherForcingScorer(object(), tok)
    assert "seq2seq" in repr(scorer) and scorer.describe()["kind"] == "seq2seq"


# ------------------------------------------------------------------ embeddings, words
def test_embedding_similarity_input_embeddings_is_exact_token_match(tok, bart):
    scorer = EmbeddingSimilarityScorer(bart, tok, layer=None)
    ref = scorer.tokenize("a red cat")
    got = scorer.score(ref, ["a blue cat", "", "a red cat"])
    table = bart.get_input_embeddings().weight.detach().double().numpy()
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    cand = tok("a blue cat", add_special_tokens=False)["input_ids"]
    expected = [(unit[r] @ unit[cand].T).max() for r in ref.ids]
    np.testing.assert_allclose(got[0], expected, atol=1e-6)
    assert got[0][0] == pytest.approx(1.0) and got[0][2] == pytest.approx(1.0)  # 'a', 'cat' present
    assert got[0][1] < 0.99  # 'red' absent
    np.testing.assert_array_equal(got[1], 0.0)  # empty caption
    np.testing.assert_allclose(got[2], 1.0, atol=1e-6)


def test_embedding_similarity_contextual_equals_manual(tok, bart):
    scorer = EmbeddingSimilarityScorer(bart, tok, layer=-1)
    ref = scorer.tokenize(REFERENCE)
    got = scorer.score(ref, ["a blue dog near a white car", "a red cat"])

    def embed(text):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = bart.get_encoder()(**enc, output_hidden_states=True).hidden_states[-1][0, 1:-1].double()
        return torch.nn.functional.normalize(hidden, dim=-1)

    for row, caption in zip(got, ["a blue dog near a white car", "a red cat"], strict=False):
        expected = (embed(REFERENCE) @ embed(caption).T).max(dim=1).values.numpy()
        np.testing.assert_allclose(row, expected, atol=1e-5)


def test_word_match_scorer():
    scorer = WordMatchScorer()
    ref = scorer.tokenize("A red cat near a tree")
    assert ref.names == ("A", "red", "cat", "near", "a", "tree") and ref.ids == tuple(range(6))
    got = scorer.score(ref, ["a blue cat", "", "a RED cat near a tree"])
    np.testing.assert_array_equal(got, [[1, 0, 1, 0, 1, 0], [0] * 6, [1] * 6])


# ------------------------------------------------------------------ captioners
def test_function_captioner_single_and_batched(rgb_images):
    seen = []

    def fn(img):
        seen.append(img.shape)
        img[:] = 0  # may modify its copy freely
        return f"{img.shape[0]}"

    cap = as_captioner(fn)
    assert isinstance(cap, FunctionCaptioner)
    before = rgb_images.copy()
    assert cap.caption(rgb_images) == ["40", "40"] and seen == [(40, 48, 3)] * 2
    np.testing.assert_array_equal(rgb_images, before)
    batched = FunctionCaptioner(lambda x: ["x"] * len(x), batched=True)
    assert batched.caption(rgb_images) == ["x", "x"]
    with pytest.raises(ValueError, match="fn"):
        FunctionCaptioner(lambda x: ["x"], batched=True).caption(rgb_images)
    with pytest.raises(ValueError, match="images"):
        cap.caption(rgb_images.astype(np.float32))
    with pytest.raises(TypeError, match="captioner"):
        as_captioner(42)


def test_transformers_captioner_scores_with_its_own_head(causal_tok, vit_gpt2, rgb_images):
    cap = TransformersCaptioner(
        vit_gpt2, causal_tok, preprocess=TINY_VIT_PREPROCESS, generate_kwargs={"max_new_tokens": 5}
    )
    assert isinstance(cap, SelfScoringCaptioner)
    texts = cap.caption(rgb_images)
    tokens = cap.caption_tokens(rgb_images)
    assert len(texts) == 2 and [t.text for t in tokens] == texts
    assert all(0 < len(t) <= 5 for t in tokens)
    ref = cap.tokenize(REFERENCE)
    got = cap.score_images(ref, rgb_images)
    assert got.shape == (2, len(ref))
    pixels = torch.from_numpy(TINY_VIT_PREPROCESS.apply(rgb_images))
    ids = torch.tensor(ref.ids)
    decoder_input = torch.cat([torch.tensor([0]), ids[:-1]])
    for i in range(2):
        with torch.no_grad():
            logits = vit_gpt2(pixel_values=pixels[i : i + 1], decoder_input_ids=decoder_input[None]).logits[0]
        expected = torch.log_softmax(logits.double(), -1)[torch.arange(len(ids)), ids].numpy()
        np.testing.assert_allclose(got[i], expected, atol=1e-5)
    # the generated ids are scored as generated: greedy tokens are the argmax, so each has the top log-prob
    own = cap.score_images(tokens[0], rgb_images[:1])[0]
    decoder_input = torch.cat([torch.tensor([0]), torch.tensor(tokens[0].ids[:-1])])
    with torch.no_grad():
        logits = vit_gpt2(pixel_values=pixels[:1], decoder_input_ids=decoder_input[None]).logits[0]
    np.testing.assert_allclose(own, torch.log_softmax(logits.double(), -1).max(-1).values.numpy(), atol=1e-5)


def test_transformers_captioner_restores_state_and_checks_args(causal_tok, vit_gpt2, rgb_images):
    cap = TransformersCaptioner(
        vit_gpt2, causal_tok, preprocess=TINY_VIT_PREPROCESS, generate_kwargs={"max_new_tokens": 3}
    )
    before = _warm_up(vit_gpt2, pixel_values=torch.zeros(1, 3, 32, 32), decoder_input_ids=torch.tensor([[0]]))
    vit_gpt2.train()
    try:
        cap.score_images(cap.tokenize("a cat"), rgb_images)
        cap.caption(rgb_images)
        assert all(m.training for m in vit_gpt2.modules()) and hook_count(vit_gpt2) == before
        assert all(p.requires_grad and p.grad is None for p in vit_gpt2.parameters())
    finally:
        vit_gpt2.eval()
    with pytest.raises(TypeError, match="preprocess"):
        TransformersCaptioner(vit_gpt2, causal_tok)
    assert "VisionEncoderDecoderModel" in repr(cap)
    assert cap.describe()["generate_kwargs"] == {"max_new_tokens": 3, "do_sample": False, "num_beams": 1}


def test_caption_tokens_validation():
    with pytest.raises(ValueError, match="names"):
        CaptionTokens("a b", (1, 2), ("a",))


def test_blip_captioner_generation_and_teacher_forcing_agree(causal_tok, rgb_images):
    blip = build_blip(len(causal_tok))
    cap = TransformersCaptioner(blip, causal_tok, preprocess=TINY_VIT_PREPROCESS, generate_kwargs={"max_new_tokens": 4})
    tokens = cap.caption_tokens(rgb_images)
    pixels = torch.from_numpy(TINY_VIT_PREPROCESS.apply(rgb_images))
    for i, generated in enumerate(tokens):
        assert 0 < len(generated) <= 4
        own = cap.score_images(generated, rgb_images[i : i + 1])[0]
        inputs = torch.tensor([[blip.config.text_config.bos_token_id, *generated.ids[:-1]]])
        with torch.no_grad():
            log_probs = torch.log_softmax(blip(pixel_values=pixels[i : i + 1], input_ids=inputs).logits[0].double(), -1)
        np.testing.assert_allclose(own, log_probs[torch.arange(len(generated)), list(generated.ids)].numpy(), atol=1e-5)
        np.testing.assert_allclose(own, log_probs.max(-1).values.numpy(), atol=1e-5)  # greedy = argmax
