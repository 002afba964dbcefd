"""Explain image captions: which pixels make each word of the caption.

A captioner (a local model, a remote API or any function) plus a scorer
become an ordinary xai-bridge :class:`~xai_bridge.models.Model` --
:class:`~xai_bridge.captions.model.CaptionScoreModel` -- whose outputs are one score per token of the
image's own caption: how likely that token stays once parts of the image are
masked. Any perturbation method (``shap.Partition``, ``lime.Lime``, ``builtin.RISE``,
``builtin.Occlusion``) then explains it unchanged, with one target per token.
This is seed 000 (Azure captions, shap's Partition explainer, distilbart
teacher forcing) in one call::

    from xai_bridge.captions import explain_caption
    from xai_bridge.adapters.captioners.azure import AzureVisionV31Captioner
    from xai_bridge.adapters.captioners.scorers import TeacherForcingScorer

    captioner = AzureVisionV31Captioner(endpoint)          # key from $AZURE_VISION_KEY
    scorer = TeacherForcingScorer.from_pretrained("sshleifer/distilbart-xsum-12-6")
    [exp] = explain_caption(captioner, "cat.jpg", "shap.Partition", scorer=scorer, budget=300)
    exp.target_names  # [['a', 'cat', 'sitting', ...]]

A local transformers captioner (:class:`~xai_bridge.adapters.captioners.local.TransformersCaptioner`)
needs no scorer: it scores the caption with its own language head.
:func:`explain_answer` does the same for the answer to a question (the
question is the captioner's prompt). With a local model
(:class:`~xai_bridge.adapters.captioners.vlm.TransformersVLM`, no scorer) the
score of answer token ``t`` is its teacher-forced log-probability under the
model's own language head, ``log p(a_t | masked image, question, a_<t)``, and
gradient methods (``captum.IntegratedGradients``, ``gradcam.GradCAM``...)
differentiate that same score in the pixels. With a remote model
(:class:`~xai_bridge.adapters.captioners.openai.OpenAICaptioner`, which sends
the question as the prompt) each masked image is answered by the API and
``scorer`` scores the reference answer given that answer (e.g. a
:class:`~xai_bridge.adapters.captioners.scorers.TeacherForcingScorer`), with
the client's concurrency, retries, rate limit and cache. Both take the shape of the explain
family: ``(subject, images, method, /, targets=None, *, ...)``; the older
orders and keywords still work for one release (``_legacy.py``).

Only numpy and Pillow are imported here; torch/transformers/requests load
with the adapters that need them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ParameterError
from ..explanation import Explanation
from ..images import Layout
from ..progress import ProgressArg
from ._legacy import BUDGET_PARAMS, legacy_answer_args, legacy_caption_args
from ._run import Settings, explain_texts, image_rows
from .protocols import Captioner, CaptionScorer

if TYPE_CHECKING:  # pragma: no cover
    from ..registry import Registry

__all__ = ["BUDGET_PARAMS", "explain_answer", "explain_caption"]


def explain_caption(
    captioner: Captioner | Callable[[np.ndarray], str],
    images: Any,
    method: str = "shap.Partition",
    /,
    targets: Sequence[str] | str | None = None,
    *legacy: Any,
    scorer: CaptionScorer | str | None = None,
    budget: int | None = 300,
    seed: int = 0,
    max_side: int | None = None,
    batch_size: int | None = None,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    progress: ProgressArg = "auto",
    **params: Any,
) -> list[Explanation]:
    """Explain each image's caption, one target per caption token.

    Per image: caption it (unless ``targets`` are given), tokenise the
    caption, wrap captioner + scorer in a :class:`CaptionScoreModel` and run
    :func:`xai_bridge.explain`; each image gets its own Explanation. A remote
    captioner's images are explained together (one image's method runs while
    another's requests are in flight), each with the random numbers it would
    draw alone, so the results equal one call per image.

    Args:
        captioner: a captioner (local, remote, function) or a function ``image -> str``.
        images: anything :func:`~xai_bridge.load_images` reads; a list may mix sizes.
        method: a perturbation method: ``"shap.Partition"`` (seed 000), ``"lime.Lime"``,
            ``"builtin.RISE"``, ``"builtin.Occlusion"``...
        targets: the captions to explain, one per image (None: the captioner's own).
        *legacy: the deprecated older order ``(captioner, images, scorer, method, max_evals)``.
        scorer: a caption scorer; a path/name for
            :meth:`~xai_bridge.adapters.captioners.scorers.TeacherForcingScorer.from_pretrained`;
            or None for a self-scoring (local transformers) captioner.
        budget: model evaluations per image, passed as the method's own budget
            parameter (its :attr:`~xai_bridge.registry.MethodSpec.budget`);
            ignored by methods whose cost is fixed by other parameters
            (occlusion: ``window``/``stride``).
        seed: random seed.
        max_side: shrink images whose longer side exceeds this first (seed 000 used 500).
        batch_size: most masked images per model call (default 64: the
            captioner gets at most that many at once, and a remote one sends
            them concurrently); a method with its own ``batch_size``
            parameter (shap, lime) gets it too when given.
        layout: layout of array inputs when ambiguous.
        registry: method table (default: the built-in one).
        progress: a bar moving per batch of caption scores (True, False or
            ``"auto"``: in terminals and notebooks, once the call has run for 2 s).
        **params: the method's own parameters.

    Returns:
        One Explanation per image: ``targets`` are the token ids,
        ``target_names`` the cleaned token strings, ``scores`` the tokens'
        scores on the unmasked image, and ``params`` also records the caption,
        the captioner and the scorer (never an API key).
    """
    text_arg = "captions" if "captions" in params else "targets"  # the name the caller used, for messages
    method, targets, scorer, budget, batch_size, model_batch = legacy_caption_args(
        method, targets, legacy, params, scorer=scorer, budget=budget, batch_size=batch_size, registry=registry
    )
    settings = Settings(scorer, budget, seed, max_side, batch_size, model_batch, layout, registry, progress, params)
    settings.text_arg = text_arg
    return explain_texts(captioner, images, method, targets, settings)


def explain_answer(
    vlm: Captioner | Callable[[np.ndarray, str], str],
    images: Any,
    method: str = "shap.Partition",
    /,
    targets: Sequence[str] | str | None = None,
    *legacy: Any,
    question: str | Sequence[str] | None = None,
    scorer: CaptionScorer | str | None = None,
    budget: int | None = 300,
    seed: int = 0,
    max_side: int | None = None,
    batch_size: int | None = None,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    progress: ProgressArg = "auto",
    **params: Any,
) -> list[Explanation]:
    """Explain each image's answer to a question, one target per answer token.

    :func:`explain_caption` with the question as the prompt: the model's own
    answer on the unmasked image is the reference, and each masked image is
    scored by how likely that answer stays (see the module docstring for
    local models, whose own head scores it, and remote ones, whose answers
    ``scorer`` scores).

    Args:
        vlm: a captioner that takes ``prompt=`` (``TransformersVLM``,
            ``OpenAICaptioner``) or a function ``(image, question) -> str``.
        images: anything :func:`~xai_bridge.load_images` reads; a list may mix sizes.
        method: any perturbation method; gradient methods too with a local
            ``TransformersVLM`` and no scorer.
        targets: the answers to explain, one per image (None: the model's own).
        *legacy: the deprecated older order ``(vlm, images, question, scorer, method, max_evals)``.
        question: the question, or one per image (required).
        scorer: as in :func:`explain_caption` (None: the model's own head).
        budget: model evaluations per image (as in :func:`explain_caption`).
        seed: random seed.
        max_side: shrink larger images first.
        batch_size: images per model call.
        layout: layout of array inputs when ambiguous.
        registry: method table.
        progress: progress bar.
        **params: the method's own parameters.

    Returns:
        One Explanation per image, shaped as :func:`explain_caption`'s (the
        answer's token ids as ``targets``, token strings as ``target_names``;
        ``params["caption"]`` is the answer, ``params["caption_tokens"]`` its
        tokens), with ``params["question"]`` added.

    Example::

        vlm = TransformersVLM(BlipForQuestionAnswering.from_pretrained(folder), BlipProcessor.from_pretrained(folder))
        [exp] = xb.explain_answer(vlm, "dog.jpg", "builtin.Occlusion", question="what animal is this?")
        exp.target_names  # [['dog']]
    """
    text_arg = "answers" if "answers" in params else "targets"  # the name the caller used, for messages
    method, targets, question, scorer, budget, batch_size, model_batch = legacy_answer_args(
        method,
        targets,
        legacy,
        params,
        question=question,
        scorer=scorer,
        budget=budget,
        batch_size=batch_size,
        registry=registry,
    )
    settings = Settings(scorer, budget, seed, max_side, batch_size, model_batch, layout, registry, progress, params)
    settings.prompts = _questions(question, len(image_rows(images, layout)))
    settings.text_arg = text_arg
    return explain_texts(vlm, images, method, targets, settings)


def _questions(question: Any, n_images: int) -> list[str]:
    """One non-empty question per image, from one question or a list of them."""
    if question is None:
        raise ParameterError("question: expected the question to answer, got None; pass question='...'")
    if isinstance(question, str):
        prompts = [question] * n_images
    elif isinstance(question, Sequence) and all(isinstance(q, str) for q in question):
        prompts = list(question)
    else:
        raise ParameterError(f"question: expected a str or one str per image, got {type(question).__name__}")
    if len(prompts) != n_images or any(not q.strip() for q in prompts):
        raise ParameterError(
            f"question: expected one non-empty question (or one per image, {n_images}), got {len(prompts)}; "
            "pass the question as a str"
        )
    return prompts
