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
    [exp] = explain_caption(captioner, "cat.jpg", scorer, method="shap.Partition", max_evals=300)
    exp.target_names  # [['a', 'cat', 'sitting', ...]]

A local transformers captioner (:class:`~xai_bridge.adapters.captioners.local.TransformersCaptioner`)
needs no scorer: it scores the caption with its own language head.
:func:`explain_answer` does the same for the answer to a question (the
question is the captioner's prompt).

Only numpy and Pillow are imported here; torch/transformers/requests load
with the adapters that need them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .._turns import Turns
from ..errors import ModelInputError, ParameterError
from ..explanation import Explanation
from ..images import Layout, load_images
from ..progress import ProgressArg, session, set_prefix
from .model import CaptionScoreModel, _digest, fit_max_side

if TYPE_CHECKING:  # pragma: no cover
    from ..adapters.captioners.local import Captioner
    from ..adapters.captioners.scorers import CaptionScorer
    from ..registry import Registry

__all__ = ["BUDGET_PARAMS", "explain_answer", "explain_caption"]

#: Images explained at once with a remote captioner (each keeps up to a batch of requests pending).
MAX_IMAGES_AT_ONCE = 16

#: The parameter that sets the number of model evaluations of each method.
BUDGET_PARAMS: dict[str, str] = {"shap.Partition": "max_evals", "lime.Lime": "num_samples", "builtin.RISE": "n_masks"}


def _image_rows(images: Any, layout: Layout | str | None) -> list[np.ndarray]:
    items = images if isinstance(images, (list, tuple)) else [images]
    rows: list[np.ndarray] = []
    for item in items:
        rows.extend(load_images(item, layout=layout))
    return rows


def explain_caption(
    captioner: Captioner | Callable[[np.ndarray], str],
    images: Any,
    scorer: CaptionScorer | str | None = None,
    method: str = "shap.Partition",
    max_evals: int | None = 300,
    *,
    captions: Sequence[str] | None = None,
    seed: int = 0,
    max_side: int | None = None,
    model_batch_size: int = 64,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    progress: ProgressArg = "auto",
    **params: Any,
) -> list[Explanation]:
    """Explain each image's caption, one target per caption token.

    For every image: caption it (unless ``captions`` are given), tokenise the
    caption, wrap captioner + scorer in a :class:`CaptionScoreModel` and run
    :func:`xai_bridge.explain` with ``method``. Each image has its own caption,
    so each gets its own :class:`~xai_bridge.Explanation` (``N == 1``).
    With a remote captioner (one with ``max_concurrency`` above 1) the images
    are explained together: while one image's requests are in flight the
    next image's method runs, so the requests of all images share the
    captioner's concurrency limit. Each image draws the random numbers it
    would draw alone, so the results equal one call per image.

    Args:
        captioner: a captioner (local, remote, function) or a function ``image -> str``.
        images: anything :func:`~xai_bridge.load_images` reads; a list may mix sizes.
        scorer: a caption scorer; a path/name for
            :meth:`~xai_bridge.adapters.captioners.scorers.TeacherForcingScorer.from_pretrained`;
            or None for a self-scoring (local transformers) captioner.
        method: a perturbation method: ``"shap.Partition"`` (seed 000), ``"lime.Lime"``,
            ``"builtin.RISE"``, ``"builtin.Occlusion"``...
        max_evals: evaluation budget, passed as the method's own budget
            parameter (see :data:`BUDGET_PARAMS`); ignored by methods whose
            cost is fixed by other parameters (occlusion: ``window``/``stride``).
        captions: the captions to explain, one per image (default: the captioner's).
        seed: random seed.
        max_side: shrink images whose longer side exceeds this first (seed 000 used 500).
        model_batch_size: largest batch of masked images the captioner gets
            at once (remote captioners send a batch concurrently); methods
            with their own ``batch_size`` parameter (shap, lime) batch first.
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
    return _explain_texts(
        captioner,
        images,
        scorer,
        method,
        max_evals,
        texts=captions,
        prompts=None,
        seed=seed,
        max_side=max_side,
        model_batch_size=model_batch_size,
        layout=layout,
        registry=registry,
        progress=progress,
        params=params,
    )


def explain_answer(
    vlm: Captioner | Callable[[np.ndarray, str], str],
    images: Any,
    question: str | Sequence[str],
    scorer: CaptionScorer | str | None = None,
    method: str = "shap.Partition",
    max_evals: int | None = 300,
    *,
    answers: Sequence[str] | None = None,
    seed: int = 0,
    max_side: int | None = None,
    model_batch_size: int = 64,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    progress: ProgressArg = "auto",
    **params: Any,
) -> list[Explanation]:
    """Explain each image's answer to a question, one target per answer token.

    :func:`explain_caption` with the question as the prompt: the model's own
    answer on the unmasked image is the reference, and each masked image is
    scored by how likely that answer stays. With a local model
    (:class:`~xai_bridge.adapters.captioners.vlm.TransformersVLM`, no scorer)
    the score of token ``t`` is its teacher-forced log-probability under the
    model's own language head, ``log p(a_t | masked image, question, a_<t)``;
    gradient methods (``captum.IntegratedGradients``, ``gradcam.GradCAM``...)
    then differentiate that same score in the pixels. With a remote model
    (:class:`~xai_bridge.adapters.captioners.openai.OpenAICaptioner`, which
    sends the question as the prompt) each masked image is answered by the
    API and ``scorer`` scores the reference answer given that answer (e.g. a
    :class:`~xai_bridge.adapters.captioners.scorers.TeacherForcingScorer`),
    with the client's concurrency, retries, rate limit and cache.

    Args:
        vlm: a captioner that takes ``prompt=`` (``TransformersVLM``,
            ``OpenAICaptioner``) or a function ``(image, question) -> str``.
        images: anything :func:`~xai_bridge.load_images` reads; a list may mix sizes.
        question: the question, or one per image.
        scorer: as in :func:`explain_caption` (None: the model's own head).
        method: any perturbation method; gradient methods too with a local
            ``TransformersVLM`` and no scorer.
        max_evals: as in :func:`explain_caption`.
        answers: the answers to explain, one per image (default: the model's own).
        seed: random seed.
        max_side: as in :func:`explain_caption`.
        model_batch_size: as in :func:`explain_caption`.
        layout: layout of array inputs when ambiguous.
        registry: method table (default: the built-in one).
        progress: as in :func:`explain_caption`.
        **params: the method's own parameters.

    Returns:
        One Explanation per image, shaped as :func:`explain_caption`'s (the
        answer's token ids as ``targets``, token strings as ``target_names``;
        ``params["caption"]`` is the answer, ``params["caption_tokens"]`` its
        tokens), with ``params["question"]`` added.

    Example::

        vlm = TransformersVLM(BlipForQuestionAnswering.from_pretrained(folder), BlipProcessor.from_pretrained(folder))
        [exp] = xb.explain_answer(vlm, "dog.jpg", "what animal is this?", method="builtin.Occlusion")
        exp.target_names  # [['dog']]
    """
    n_images = len(_image_rows(images, layout))
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
    return _explain_texts(
        vlm,
        images,
        scorer,
        method,
        max_evals,
        texts=answers,
        prompts=prompts,
        seed=seed,
        max_side=max_side,
        model_batch_size=model_batch_size,
        layout=layout,
        registry=registry,
        progress=progress,
        params=params,
    )


def _explain_texts(
    captioner: Any,
    images: Any,
    scorer: CaptionScorer | str | None,
    method: str,
    max_evals: int | None,
    *,
    texts: Sequence[str] | None,
    prompts: list[str] | None,
    seed: int,
    max_side: int | None,
    model_batch_size: int,
    layout: Layout | str | None,
    registry: Registry | None,
    progress: ProgressArg,
    params: dict[str, Any],
) -> list[Explanation]:
    """The caption/answer loop: per image, a reference text, a token-score model, one ``explain`` call."""
    from ..adapters.captioners.local import as_captioner, describe
    from ..registry import default_registry
    from ..routing import explain

    word = "captions" if prompts is None else "answers"
    captioner = as_captioner(captioner)
    if isinstance(scorer, str):
        from ..adapters.captioners.scorers import TeacherForcingScorer

        scorer = TeacherForcingScorer.from_pretrained(scorer)
    rows = [fit_max_side(img, max_side) for img in _image_rows(images, layout)]
    if texts is not None:
        texts = [str(c) for c in ([texts] if isinstance(texts, str) else texts)]
        if len(texts) != len(rows):
            raise ParameterError(f"{word}: got {len(texts)} {word} for {len(rows)} images; pass one per image")
    method_params = dict(params)
    spec = (registry or default_registry()).spec(method)
    budget = BUDGET_PARAMS.get(spec.name)
    if budget is not None and max_evals is not None:
        method_params.setdefault(budget, int(max_evals))
    own_tokens = getattr(captioner, "caption_tokens", None)
    # A remote captioner spends its time waiting: the images then take turns (see xai_bridge._turns), so the
    # requests of every image are in flight together under the captioner's concurrency limit.
    remote = scorer is not None and int(getattr(captioner, "max_concurrency", 1) or 1) > 1 and len(rows) > 1
    turns = Turns(min(len(rows), MAX_IMAGES_AT_ONCE) if remote else 1)
    asking: Any = _Offloaded(captioner, turns) if remote else captioner

    def one(i: int) -> Explanation:
        image = rows[i]
        if not remote and len(rows) > 1:  # one image after another: say which (together, they share the bar)
            set_prefix(f"image {i + 1}/{len(rows)} ")
        batch = image[None]
        prompt = None if prompts is None else prompts[i]
        ask = {} if prompt is None else {"prompt": prompt}
        if texts is not None:
            reference: Any = texts[i]
        elif scorer is None and callable(own_tokens):
            reference = own_tokens(batch, **ask)[0]  # the generated ids themselves
        else:
            from ..adapters.captioners.local import captions_of

            reference = captions_of(asking, batch, prompt)[0]
        model: Any
        distinct: int | None = None  # distinct captions seen (None: a gradient model sees none)
        if spec.needs_gradients and scorer is None and callable(getattr(captioner, "answer_model", None)):
            tokens = reference if not isinstance(reference, str) else captioner.tokenize(reference)  # type: ignore[attr-defined]
            if len(tokens) == 0:
                raise ModelInputError(f"reference: {word[:-1]} {tokens.text!r} has no tokens to explain")
            model = captioner.answer_model(tokens, prompt, batch_size=model_batch_size)  # type: ignore[attr-defined]
        else:
            model = CaptionScoreModel(
                asking,
                scorer,
                reference,
                batch_size=model_batch_size,
                reference_image=image if texts is None else None,
                prompt=prompt,
            )
            tokens = model.reference
        exp = explain(
            model, batch, method, targets=[list(range(len(tokens)))], seed=seed, registry=registry, **method_params
        )
        if isinstance(model, CaptionScoreModel):
            distinct = len(model.captions)
        provenance = {
            **dict(exp.params),
            "caption": tokens.text,
            "caption_tokens": list(tokens.names),
            "captioner": describe(captioner),
            "scorer": describe(scorer) if scorer is not None else "captioner's own language head",
            "distinct_captions": distinct,
        }
        if prompt is not None:
            provenance["question"] = prompt
        return replace(exp, targets=np.asarray([tokens.ids], np.int64), params=provenance)

    with session(progress, f"{'caption' if prompts is None else 'answer'} {method}"):
        return turns.map(one, list(range(len(rows))))


class _Offloaded:
    """A remote captioner shared by the images of one call, handing the caller's turn over while it waits.

    Images that several explanations ask for (the fully masked image of
    every shap explanation, often) are sent once per call: the first asker
    sends it, the others wait for its answer.
    """

    def __init__(self, captioner: Any, turns: Turns) -> None:
        self.captioner = captioner
        self.caption = turns.offload(self._caption)
        self._answers: dict[str, Future[str]] = {}
        self._lock = threading.Lock()

    def _caption(self, images: np.ndarray, prompt: str | None = None) -> list[str]:
        from ..adapters.captioners.local import captions_of

        keys = [f"{_digest(img)}|{prompt}" for img in images]  # one answer per image and question
        mine: dict[str, int] = {}
        with self._lock:
            for i, k in enumerate(keys):
                if k not in self._answers:
                    self._answers[k] = Future()
                    mine[k] = i
        if mine:
            try:
                fresh = captions_of(self.captioner, images[list(mine.values())], prompt)
            except BaseException as exc:
                with self._lock:
                    for k in mine:
                        self._answers.pop(k).set_exception(exc)
                raise
            for k, text in zip(mine, fresh, strict=True):
                self._answers[k].set_result(text)
        return [self._answers[k].result() for k in keys]

    def describe(self) -> dict[str, Any]:
        """The wrapped captioner's provenance."""
        from ..adapters.captioners.local import describe

        return describe(self.captioner)
