"""explain_answer / explain_caption refuse what would fail deep inside a model, in one line naming the argument.

A question longer than the text tower's positions (it failed in an
embedding lookup), and an empty text to explain given as ``targets=[""]`` or
the deprecated ``answers=[""]`` / ``captions=[""]`` (the message named neither).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from caption_server import rule_answer
from xai_bridge.adapters.captioners.scorers import WordMatchScorer

import xai_bridge as xb
from xai_bridge.captions import explain_answer, explain_caption

IMAGE = np.full((32, 32, 3), 230, np.uint8)
OCCLUSION = {"window": 16, "stride": 16}


@pytest.mark.parametrize("keyword", ["targets", "answers"])
@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_answer_to_explain_names_its_argument(keyword: str, text: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(xb.ParameterError) as info:
            explain_answer(
                rule_answer,
                IMAGE,
                "builtin.Occlusion",
                question="what animal?",
                scorer=WordMatchScorer(),
                **{keyword: [text]},
                **OCCLUSION,
            )
    message = str(info.value)
    assert message.startswith(f"{keyword}: answer 0 is empty") and f"or {keyword}=None" in message
    assert "\n" not in message


def test_an_empty_caption_to_explain_names_targets() -> None:
    with pytest.raises(xb.ParameterError, match=r"^targets: caption 0 is empty \(''\)"):
        explain_caption(lambda im: "a cat", IMAGE, "builtin.Occlusion", targets=[""], scorer=WordMatchScorer())


def test_an_answer_without_a_scorable_token_names_its_argument() -> None:
    with pytest.raises(xb.ParameterError, match=r"^targets: answer '\?\?\?' has no token the scorer can score"):
        explain_answer(
            rule_answer,
            IMAGE,
            "builtin.Occlusion",
            targets=["???"],
            question="q?",
            scorer=WordMatchScorer(),
            **OCCLUSION,
        )


@pytest.mark.slow  # importing transformers' BLIP and building it: ~15 s on 2 loaded cores
def test_a_question_over_the_text_towers_positions_is_refused_before_running() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from hf_tiny import TINY_VIT_PREPROCESS, build_blip_vqa, build_tokenizer
    from xai_bridge.adapters.captioners.vlm import TransformersVLM

    tok = build_tokenizer()
    vlm = TransformersVLM(build_blip_vqa(len(tok)), tokenizer=tok, preprocess=TINY_VIT_PREPROCESS)
    limit = vlm.model.config.text_config.max_position_embeddings  # 64 in the tiny configuration
    long_question = "what " * limit + "animal is this?"
    with pytest.raises(xb.ParameterError) as info:
        explain_answer(vlm, IMAGE, "builtin.Occlusion", question=long_question, **OCCLUSION)
    message = str(info.value)
    assert message.startswith("question: ") and f"over the {limit} text positions" in message
    assert "shorten the question" in message and "\n" not in message and len(message) < 300
    assert vlm._prompt_ids("what animal is this?").shape[1] < limit  # a question that fits is kept
