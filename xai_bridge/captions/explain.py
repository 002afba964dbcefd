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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .._turns import Turns
from ..errors import ModelInputError, ParameterError
from ..explanation import Explanation
from ..images import Layout, load_images
from ..progress import ProgressArg, session, set_prefix
from ._legacy import BUDGET_PARAMS, legacy_answer_args, legacy_caption_args
from .model import CaptionRequests, CaptionScoreModel, fit_max_side
from .protocols import Captioner, CaptionScorer, CaptionTokens, as_captioner, describe

if TYPE_CHECKING:  # pragma: no cover
    from ..registry import MethodSpec, Registry

__all__ = ["BUDGET_PARAMS", "explain_answer", "explain_caption"]

#: Images explained at once with a remote captioner (each keeps up to a batch of requests pending).
MAX_IMAGES_AT_ONCE = 16
#: Images per captioner call unless ``batch_size`` says otherwise.
DEFAULT_BATCH_SIZE = 64


def _image_rows(images: Any, layout: Layout | str | None) -> list[np.ndarray]:
    items = images if isinstance(images, (list, tuple)) else [images]
    rows: list[np.ndarray] = []
    for item in items:
        rows.extend(load_images(item, layout=layout))
    return rows


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
    settings = _Settings(scorer, budget, seed, max_side, batch_size, model_batch, layout, registry, progress, params)
    settings.text_arg = text_arg
    return _explain_texts(captioner, images, method, targets, settings)


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
    settings = _Settings(scorer, budget, seed, max_side, batch_size, model_batch, layout, registry, progress, params)
    settings.prompts = _questions(question, len(_image_rows(images, layout)))
    settings.text_arg = text_arg
    return _explain_texts(vlm, images, method, targets, settings)


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


@dataclass
class _Settings:
    """The keywords of one caption/answer call, shared by its images."""

    scorer: CaptionScorer | str | None
    budget: int | None
    seed: int
    max_side: int | None
    batch_size: int | None  # images per model call, for the model and the method
    model_batch: int | None  # the deprecated model_batch_size=: the model's alone
    layout: Layout | str | None
    registry: Registry | None
    progress: ProgressArg
    params: dict[str, Any]
    prompts: list[str] | None = None
    spec: MethodSpec | None = field(default=None, repr=False)
    text_arg: str = "targets"  # the argument that gave the texts: targets=, or the deprecated captions=/answers=

    @property
    def word(self) -> str:
        return "captions" if self.prompts is None else "answers"


def _explain_texts(
    captioner: Any, images: Any, method: str, texts: Sequence[str] | str | None, settings: _Settings
) -> list[Explanation]:
    """The caption/answer loop: per image, a reference text, a token-score model, one ``explain`` call."""
    from ..registry import default_registry

    captioner = as_captioner(captioner)
    if isinstance(settings.scorer, str):
        settings.scorer = _scorer_named(settings.scorer)
    rows = [fit_max_side(img, settings.max_side) for img in _image_rows(images, settings.layout)]
    references = _given_texts(texts, len(rows), settings.word, settings.text_arg)
    settings.spec = (settings.registry or default_registry()).spec(method)
    method_params = _method_params(settings)
    # A remote captioner spends its time waiting: the images then take turns (see xai_bridge._turns), so the
    # requests of every image are in flight together under the captioner's concurrency limit.
    concurrent = int(getattr(captioner, "max_concurrency", 1) or 1) > 1
    remote = settings.scorer is not None and concurrent and len(rows) > 1
    turns = Turns(min(len(rows), MAX_IMAGES_AT_ONCE) if remote else 1)
    asking = CaptionRequests(captioner, turns if remote else None) if settings.scorer is not None else captioner

    def one(i: int) -> Explanation:
        if not remote and len(rows) > 1:  # one image after another: say which (together, they share the bar)
            set_prefix(f"image {i + 1}/{len(rows)} ")
        reference = None if references is None else references[i]
        prompt = None if settings.prompts is None else settings.prompts[i]
        return _explain_one(captioner, asking, rows[i], reference, prompt, method_params, settings)

    with session(settings.progress, f"{'caption' if settings.prompts is None else 'answer'} {method}"):
        return turns.map(one, list(range(len(rows))))


def _scorer_named(name: str) -> CaptionScorer:
    """A teacher-forced scorer loaded by name or path, through the adapter table (see ``models.adapter_table``)."""
    from ..models import adapter_table

    scorer: CaptionScorer = adapter_table().named_scorer(name)
    return scorer


def _given_texts(texts: Sequence[str] | str | None, n_images: int, word: str, arg: str) -> list[str] | None:
    """The texts to explain, one per image; an empty one is refused naming the argument that gave it."""
    if texts is None:
        return None
    given = [str(c) for c in ([texts] if isinstance(texts, str) else texts)]
    if len(given) != n_images:
        raise ParameterError(f"{arg}: got {len(given)} {word} for {n_images} images; pass one per image")
    for i, text in enumerate(given):
        if not text.strip():
            raise ParameterError(
                f"{arg}: {word[:-1]} {i} is empty ({text!r}), so it has no token to explain; pass the "
                f"{word[:-1]} text, or {arg}=None to explain the model's own"
            )
    return given


def _method_params(settings: _Settings) -> dict[str, Any]:
    """The method's parameters: the caller's, plus the budget under the method's own name for it."""
    method_params = dict(settings.params)
    spec = settings.spec
    assert spec is not None
    if spec.budget is not None and settings.budget is not None:
        method_params.setdefault(spec.budget, int(settings.budget))
    if settings.batch_size is not None:
        method_params.setdefault("batch_size", int(settings.batch_size))
    return method_params


def _explain_one(
    captioner: Any,
    asking: Any,
    image: np.ndarray,
    reference: str | None,
    prompt: str | None,
    method_params: dict[str, Any],
    settings: _Settings,
) -> Explanation:
    """One image: its reference text, the model scoring that text's tokens, the explanation and its provenance."""
    from ..routing import explain

    batch = image[None]
    text: Any = reference if reference is not None else _reference(captioner, asking, batch, prompt, settings)
    model, tokens = _token_model(captioner, asking, image, text, prompt, settings, given=reference is not None)
    targets = [list(range(len(tokens)))]
    name = _name(settings)
    try:
        exp = explain(model, batch, name, targets, seed=settings.seed, registry=settings.registry, **method_params)
    except ParameterError as exc:  # batch_size given, but the method has no parameter of that name: the model's alone
        if "batch_size" not in method_params or not exc.valid or "batch_size" in exc.valid:
            raise
        method_params.pop("batch_size")
        exp = explain(model, batch, name, targets, seed=settings.seed, registry=settings.registry, **method_params)
    provenance = {
        **dict(exp.params),
        "caption": tokens.text,
        "caption_tokens": list(tokens.names),
        "captioner": describe(captioner),
        "scorer": describe(settings.scorer) if settings.scorer is not None else "captioner's own language head",
        "distinct_captions": len(model.captions) if isinstance(model, CaptionScoreModel) else None,
    }
    if prompt is not None:
        provenance["question"] = prompt
    return replace(exp, targets=np.asarray([tokens.ids], np.int64), params=provenance)


def _name(settings: _Settings) -> str:
    assert settings.spec is not None
    return settings.spec.name


def _reference(captioner: Any, asking: Any, batch: np.ndarray, prompt: str | None, settings: _Settings) -> Any:
    """The text to explain: the captioner's own on the unmasked image (its generated ids, when self-scoring)."""
    from .protocols import captions_of

    own_tokens = getattr(captioner, "caption_tokens", None)
    if settings.scorer is None and callable(own_tokens):
        return own_tokens(batch, **({} if prompt is None else {"prompt": prompt}))[0]
    return captions_of(asking, batch, prompt)[0]


def _token_model(
    captioner: Any, asking: Any, image: np.ndarray, text: Any, prompt: str | None, settings: _Settings, *, given: bool
) -> tuple[Any, CaptionTokens]:
    """The model whose outputs are the text's token scores, and the tokens (its targets)."""
    batch_size = int(settings.model_batch or settings.batch_size or DEFAULT_BATCH_SIZE)
    assert settings.spec is not None
    if settings.spec.needs_gradients and settings.scorer is None and callable(getattr(captioner, "answer_model", None)):
        tokens = text if not isinstance(text, str) else captioner.tokenize(text)
        if len(tokens) == 0:
            raise ModelInputError(f"reference: {settings.word[:-1]} {tokens.text!r} has no tokens to explain")
        return captioner.answer_model(tokens, prompt, batch_size=batch_size), tokens
    scorer = settings.scorer
    assert not isinstance(scorer, str)  # a name was loaded into a scorer by _explain_texts
    try:
        model = CaptionScoreModel(
            asking,
            scorer,
            text,
            batch_size=batch_size,
            reference_image=None if given else image,
            prompt=prompt,
        )
    except ModelInputError as exc:
        if not given or "no tokens" not in str(exc):
            raise
        raise ParameterError(
            f"{settings.text_arg}: {settings.word[:-1]} {text!r:.60} has no token the scorer can score; pass a "
            f"{settings.word[:-1]} with words in it, or {settings.text_arg}=None to explain the model's own"
        ) from None
    return model, model.reference
