"""One caption or answer call, image by image: a reference text, a model scoring its tokens, one explain each.

:func:`~xai_bridge.captions.explain_caption` and
:func:`~xai_bridge.captions.explain_answer` read their arguments (and the
older orders) and hand them here as :class:`Settings`. A remote captioner's
images take turns (:mod:`xai_bridge._turns`) so their requests are in flight
together; each image draws the random numbers it would draw alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .._turns import Turns
from ..errors import ModelInputError, ParameterError
from ..explanation import Explanation
from ..images import Layout, load_images
from ..progress import ProgressArg, session, set_prefix
from .model import CaptionRequests, CaptionScoreModel, fit_max_side
from .protocols import CaptionScorer, CaptionTokens, as_captioner, describe

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

    from ..registry import MethodSpec, Registry

__all__ = ["Settings", "explain_texts", "image_rows"]

#: Images explained at once with a remote captioner (each keeps up to a batch of requests pending).
MAX_IMAGES_AT_ONCE = 16
#: Images per captioner call unless ``batch_size`` says otherwise.
DEFAULT_BATCH_SIZE = 64


def image_rows(images: Any, layout: Layout | str | None) -> list[np.ndarray]:
    """Every image of ``images`` (one input or a list of them, of any sizes) as one uint8 ``(H, W, 3)`` row each."""
    items = images if isinstance(images, (list, tuple)) else [images]
    rows: list[np.ndarray] = []
    for item in items:
        rows.extend(load_images(item, layout=layout))
    return rows


@dataclass
class Settings:
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


def explain_texts(
    captioner: Any, images: Any, method: str, texts: Sequence[str] | str | None, settings: Settings
) -> list[Explanation]:
    """The caption/answer loop: per image, a reference text, a token-score model, one ``explain`` call."""
    from ..registry import default_registry

    captioner = as_captioner(captioner)
    if isinstance(settings.scorer, str):
        settings.scorer = _scorer_named(settings.scorer)
    rows = [fit_max_side(img, settings.max_side) for img in image_rows(images, settings.layout)]
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


def _method_params(settings: Settings) -> dict[str, Any]:
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
    settings: Settings,
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


def _name(settings: Settings) -> str:
    assert settings.spec is not None
    return settings.spec.name


def _reference(captioner: Any, asking: Any, batch: np.ndarray, prompt: str | None, settings: Settings) -> Any:
    """The text to explain: the captioner's own on the unmasked image (its generated ids, when self-scoring)."""
    from .protocols import captions_of

    own_tokens = getattr(captioner, "caption_tokens", None)
    if settings.scorer is None and callable(own_tokens):
        return own_tokens(batch, **({} if prompt is None else {"prompt": prompt}))[0]
    return captions_of(asking, batch, prompt)[0]


def _token_model(
    captioner: Any, asking: Any, image: np.ndarray, text: Any, prompt: str | None, settings: Settings, *, given: bool
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
