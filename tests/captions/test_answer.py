"""explain_answer: per-token maps of a vision-language model's answer to a question.

Local models are tiny BLIP VQA and LLaVA models built from configs (nothing
downloaded), scored by their own language head; the remote model is the
loopback server's chat-completions endpoint, which answers a question about
an animal from the top-right quadrant alone (see ``caption_server.rule_answer``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from caption_server import rule_answer  # noqa: E402
from helpers import REPO, random_images  # noqa: E402
from hf_tiny import TINY_VIT_PREPROCESS, build_bart, build_blip_vqa, build_llava  # noqa: E402
from xai_bridge.adapters._torch import hook_count  # noqa: E402
from xai_bridge.adapters.captioners import OpenAICaptioner, RetryPolicy  # noqa: E402
from xai_bridge.adapters.captioners.scorers import TeacherForcingScorer, WordMatchScorer  # noqa: E402
from xai_bridge.adapters.captioners.vlm import AnswerModel, TransformersVLM  # noqa: E402
from xai_bridge.adapters.methods.builtin import sliding_windows  # noqa: E402

import xai_bridge as xb  # noqa: E402
from xai_bridge.captions import explain_answer, explain_caption  # noqa: E402

pytestmark = pytest.mark.timeout(180)
torch.set_num_threads(2)

QUESTION = "what animal is in the picture?"


def quadrant_image(size: int = 32) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    h = size // 2
    img[:h, :h], img[:h, h:], img[h:, :h], img[h:, h:] = (255, 200, 200), (200, 255, 200), (200, 200, 255), (90, 90, 20)
    return img


@pytest.fixture(scope="module")
def blip(tok):
    return TransformersVLM(
        build_blip_vqa(len(tok)), tokenizer=tok, preprocess=TINY_VIT_PREPROCESS, generate_kwargs={"max_new_tokens": 4}
    )


@pytest.fixture(scope="module")
def llava(causal_tok):
    return TransformersVLM(
        build_llava(len(causal_tok)),
        tokenizer=causal_tok,
        preprocess=TINY_VIT_PREPROCESS,
        generate_kwargs={"max_new_tokens": 4},
    )


@pytest.fixture(scope="module")
def images():
    return random_images((3, 32, 32, 3))


# ------------------------------------------------------------------ local: the model's own head
def test_blip_vqa_teacher_forcing_equals_its_own_generation_scores(blip, images):
    """Teacher forcing the generated answer gives the log-softmax of the logits generate() saw, token by token."""
    pixels = blip.pixel_values(images)
    question = blip._prompt_ids(QUESTION).expand(len(images), -1)
    with torch.no_grad():
        gen = blip.model.generate(
            input_ids=question,
            pixel_values=pixels,
            output_scores=True,
            return_dict_in_generate=True,
            **blip.generate_kwargs,
        )
    answers = blip.caption_tokens(images, prompt=QUESTION)
    for i, answer in enumerate(answers):
        assert 0 < len(answer) <= 4
        own = blip.score_images(answer, images[i : i + 1], prompt=QUESTION)[0]
        manual = [
            torch.log_softmax(gen.scores[t][i].double(), -1)[tok_id].item() for t, tok_id in enumerate(answer.ids)
        ]
        np.testing.assert_allclose(own, manual, atol=1e-5)
    assert blip.caption(images[:1], prompt=QUESTION) == [answers[0].text]


def test_llava_teacher_forcing_equals_a_manual_log_softmax_gather(llava, images, causal_tok):
    """On any image (masked ones too): the score of a_t is log_softmax(logits)[position before a_t, a_t]."""
    answer = llava.tokenize("a red cat")
    prompt = llava._prompt_ids(QUESTION)[0]
    assert (prompt == llava.model.config.image_token_id).sum() == 16  # (32 / 8)^2 patches
    own = llava.score_images(answer, images, prompt=QUESTION)
    full = torch.cat([prompt, torch.tensor(answer.ids)]).expand(len(images), -1)
    with torch.no_grad():
        logits = llava.model(input_ids=full, pixel_values=llava.pixel_values(images)).logits
    log_probs = torch.log_softmax(logits.double(), -1)
    p = len(prompt)
    for t, tok_id in enumerate(answer.ids):
        np.testing.assert_allclose(own[:, t], log_probs[:, p - 1 + t, tok_id].numpy(), atol=1e-5)
    generated = llava.caption_tokens(images[:1], prompt=QUESTION)[0]
    np.testing.assert_allclose(  # greedy: each generated token is the argmax
        llava.score_images(generated, images[:1], prompt=QUESTION)[0],
        [
            torch.log_softmax(
                llava.model(
                    input_ids=torch.cat([prompt, torch.tensor(generated.ids[:t], dtype=torch.long)])[None],
                    pixel_values=llava.pixel_values(images[:1]),
                )
                .logits[0, -1]
                .double(),
                -1,
            )
            .max()
            .item()
            for t in range(len(generated))
        ],
        atol=1e-5,
    )


def test_answer_model_predicts_the_teacher_forced_scores_differentiably(blip, images):
    answer = blip.caption_tokens(images[:1], prompt=QUESTION)[0]
    model = blip.answer_model(answer, QUESTION)
    assert isinstance(model, AnswerModel) and isinstance(model, xb.DifferentiableModel)
    assert model.class_names == list(answer.names) and model.user_model is blip.model
    assert model.module is blip.model.vision_model  # CAM layers live in the vision tower
    np.testing.assert_allclose(model.predict(images), blip.score_images(answer, images, prompt=QUESTION), atol=1e-5)
    x = model.pixel_tensor(images[:1]).requires_grad_(True)
    with model.guard():
        model.pixel_module()(x)[0, 0].backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def _state(module):
    return (
        module.training,
        [p.requires_grad for p in module.parameters()],
        [p.grad is None for p in module.parameters()],
        hook_count(module),
    )


@pytest.mark.parametrize("family", ["blip", "llava"])
def test_explain_answer_locally_occlusion_drops_are_the_teacher_forced_scores(family, blip, llava):
    vlm = blip if family == "blip" else llava
    image = quadrant_image()
    before = _state(vlm.model)
    [exp] = explain_answer(vlm, image, "builtin.Occlusion", question=QUESTION, window=16, stride=16, baseline=0)
    answer = vlm.caption_tokens(image[None], prompt=QUESTION)[0]
    t = len(answer)
    assert exp.attributions.shape == (1, t, 32, 32) and exp.targets.tolist() == [list(answer.ids)]
    assert exp.target_names.tolist() == [list(answer.names)] and not any("Ġ" in n for n in answer.names)
    base = vlm.score_images(answer, image[None], prompt=QUESTION)[0]
    np.testing.assert_allclose(exp.scores[0], base, atol=1e-6)
    windows = sliding_windows(32, 32, (16, 16), (16, 16))
    occluded = []
    for y, x in windows:
        img = image.copy()
        img[y : y + 16, x : x + 16] = 0
        occluded.append(img)
    drops = base - vlm.score_images(answer, np.stack(occluded), prompt=QUESTION)
    for k, (y, x) in enumerate(windows):
        np.testing.assert_allclose(exp.attributions[0, :, y, x], drops[k], atol=1e-5)
    # shaped like a caption explanation, plus the question
    assert exp.params["caption"] == answer.text and exp.params["caption_tokens"] == list(answer.names)
    assert exp.params["question"] == QUESTION and exp.params["scorer"] == "captioner's own language head"
    assert exp.params["captioner"]["type"] == "TransformersVLM" and exp.params["distinct_captions"] == 0
    assert _state(vlm.model) == before


@pytest.fixture(scope="module")
def smooth_blip(tok):
    """BLIP VQA with smaller weights: its scores are smooth enough in the pixels for a 64-step integral."""
    model = build_blip_vqa(len(tok), initializer_range=0.1)
    return TransformersVLM(model, tokenizer=tok, preprocess=TINY_VIT_PREPROCESS, generate_kwargs={"max_new_tokens": 4})


def test_explain_answer_with_gradient_methods(smooth_blip):
    blip = smooth_blip
    image = quadrant_image()
    before = _state(blip.model)
    answer = blip.caption_tokens(image[None], prompt=QUESTION)[0]
    [ig] = explain_answer(blip, image, "captum.IntegratedGradients", question=QUESTION, n_steps=64, baselines=0)
    t = len(answer)
    assert ig.attributions.shape == (1, t, 32, 32) and ig.target_names.tolist() == [list(answer.names)]
    assert ig.params["distinct_captions"] is None and ig.params["question"] == QUESTION
    # completeness: the map sums to score(image) - score(black baseline), token by token
    base = blip.score_images(answer, image[None], prompt=QUESTION)[0]
    black = blip.score_images(answer, np.zeros_like(image)[None], prompt=QUESTION)[0]
    gap = base - black
    sums = ig.attributions[0].sum(axis=(1, 2))
    checked = np.abs(gap) > 0.05  # gaps worth checking against
    assert checked.any()
    np.testing.assert_allclose(sums[checked], gap[checked], rtol=0.05)
    [cam] = explain_answer(blip, image, "gradcam.GradCAM", question=QUESTION)
    assert cam.attributions.shape == (1, t, 32, 32) and np.isfinite(cam.attributions).all()
    assert cam.params["layer"].startswith("encoder.layers.")  # a token grid of the vision tower
    assert np.abs(cam.attributions).max() > 0
    assert _state(blip.model) == before


def test_explain_caption_is_unchanged_and_answers_need_a_question(blip):
    with pytest.raises(ValueError, match="prompt: BlipForQuestionAnswering answers a question"):
        explain_caption(blip, quadrant_image(), "builtin.Occlusion", window=16, stride=16)
    with pytest.raises(xb.ParameterError, match="question: expected one non-empty question"):
        explain_answer(blip, quadrant_image(), "builtin.Occlusion", question="  ")
    with pytest.raises(TypeError, match="takes no prompt"):
        explain_answer(_NoPrompt(), quadrant_image(), "builtin.Occlusion", question=QUESTION, scorer=WordMatchScorer())


class _NoPrompt:
    """A captioner whose caption() takes no prompt."""

    def caption(self, images):
        return ["a cat"] * len(images)


def test_explain_answer_with_a_function_of_image_and_question():
    image = np.full((32, 32, 3), 230, np.uint8)
    [exp] = explain_answer(
        rule_answer,
        image,
        "builtin.Occlusion",
        question=QUESTION,
        scorer=WordMatchScorer(),
        window=16,
        stride=16,
        baseline=0,
    )
    assert exp.params["caption"] == "a dog" and exp.target_names.tolist() == [["a", "dog"]]
    dog = exp.attributions[0, 1]
    assert dog[:16, 16:].min() == 1.0 and dog[16:].max() == 0 and dog[:, :16].max() == 0


# ------------------------------------------------------------------ remote: chat completions with the question
def test_remote_answers_every_evaluation_exactly_once_and_a_cached_rerun_makes_no_request(server, tok, tmp_path):
    image = random_images((64, 64, 3))
    image[:32, 32:] = 250  # top-right bright: "a dog"
    scorer = TeacherForcingScorer(build_bart(len(tok)), tok)
    cache = tmp_path / "answers.sqlite"

    def run(method: str, **params):
        with OpenAICaptioner(
            server.url + "/v1", "loopback-vlm", key=server.key, cache=cache, retry=RetryPolicy(backoff=0.01, seed=0)
        ) as vlm:
            return explain_answer(vlm, image, method, question=QUESTION, scorer=scorer, **params)[0]

    exp = run("builtin.Occlusion", window=32, stride=32)
    answer = rule_answer(image, QUESTION)
    ref = scorer.tokenize(answer)
    assert answer == "a dog" and exp.params["caption"] == answer and exp.params["question"] == QUESTION
    assert exp.attributions.shape == (1, len(ref), 64, 64) and exp.target_names.tolist() == [list(ref.names)]
    np.testing.assert_allclose(exp.scores[0], scorer.score(ref, [answer])[0], atol=1e-6)
    for y, x in sliding_windows(64, 64, (32, 32), (32, 32)):
        occluded = image.copy()
        occluded[y : y + 32, x : x + 32] = 0
        drop = scorer.score(ref, [answer])[0] - scorer.score(ref, [rule_answer(occluded, QUESTION)])[0]
        np.testing.assert_allclose(exp.attributions[0, :, y + 5, x + 5], drop, atol=1e-5)
    assert server.requests == 5 and len(server.answered) == 5 and set(server.answered.values()) == {1}
    assert server.questions == {QUESTION: 5}  # every request carried the question
    again = run("builtin.Occlusion", window=32, stride=32)
    assert server.requests == 5  # from the cache: zero requests
    np.testing.assert_array_equal(again.attributions, exp.attributions)
    # another method: each distinct masked image answered exactly once
    server.reset_counts()
    if "shap.Partition" in xb.available_methods():
        from xai_bridge.options import ImageMasker, MaskKind

        run("shap.Partition", budget=40, masker=ImageMasker(MaskKind.CONSTANT, value=0.0), batch_size=20)
        assert server.requests == len(server.answered) > 0 and set(server.answered.values()) == {1}
        server.reset_counts()
        run("shap.Partition", budget=40, masker=ImageMasker(MaskKind.CONSTANT, value=0.0), batch_size=20)
        assert server.requests == 0


# ------------------------------------------------------------------ the example
def _example():
    import importlib.util

    path = REPO / "examples" / "explain_answer.py"
    spec = importlib.util.spec_from_file_location("explain_answer_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_runs_on_a_local_model_folder(tok, tmp_path, capsys):
    from PIL import Image
    from transformers import BlipImageProcessor, BlipProcessor

    folder = tmp_path / "blip-vqa"
    build_blip_vqa(len(tok)).save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(
        folder
    )
    Image.fromarray(quadrant_image()).save(tmp_path / "q.png")
    argv = [str(folder), str(tmp_path / "q.png"), QUESTION, "--method", "builtin.Occlusion", "--max-new-tokens", "3"]
    [exp] = _example().main([*argv, "--out", str(tmp_path / "answer")])
    out = capsys.readouterr().out
    assert f"Q: {QUESTION}" in out and f"A: {exp.params['caption']}" in out
    assert exp.attributions.shape[:2] == (1, len(exp.target_names[0])) and (tmp_path / "answer.png").is_file()


def test_example_runs_against_an_endpoint(server, tok, tmp_path, capsys):
    from PIL import Image

    scorer = tmp_path / "scorer"
    build_bart(len(tok)).save_pretrained(scorer)
    tok.save_pretrained(scorer)
    image = np.full((64, 64, 3), 40, np.uint8)
    image[:32, 32:] = 250
    Image.fromarray(image).save(tmp_path / "dog.png")
    argv = [server.url + "/v1", str(tmp_path / "dog.png"), QUESTION, "--scorer", str(scorer), "--key", server.key]
    [exp] = _example().main([*argv, "--method", "builtin.Occlusion", "--cache", str(tmp_path / "c.sqlite")])
    assert exp.params["caption"] == "a dog" and "A: a dog" in capsys.readouterr().out
    assert server.questions == {QUESTION: server.requests} and set(server.answered.values()) == {1}


def test_remote_answer_over_semantic_regions(server, tok, tmp_path):
    """explain_answer takes partition= as any method parameter: the answer's tokens explained over regions."""
    image = random_images((64, 64, 3))
    image[:32, 32:] = 250  # top-right bright: "a dog"
    scorer = TeacherForcingScorer(build_bart(len(tok)), tok)
    quadrants = np.zeros((64, 64), np.int32)
    quadrants[:32, 32:], quadrants[32:, :32], quadrants[32:, 32:] = 1, 2, 3
    with OpenAICaptioner(server.url + "/v1", "loopback-vlm", key=server.key, cache=tmp_path / "a.sqlite") as vlm:
        [exp] = explain_answer(
            vlm,
            image,
            "shap.Partition",
            question=QUESTION,
            scorer=scorer,
            budget=20,
            masker="blur(8,8)",
            partition=quadrants,
        )
    np.testing.assert_array_equal(exp.extras["segments"][0, 0], quadrants)
    for t in range(exp.n_targets):
        np.testing.assert_allclose(exp.attributions[0, t].sum(), exp.scores[0, t] - exp.base_scores[0, t], atol=1e-4)
        for q in range(4):
            assert np.ptp(exp.attributions[0, t][quadrants == q]) < 1e-6
