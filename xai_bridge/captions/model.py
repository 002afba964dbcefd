"""The caption model: a captioner plus a scorer as an ordinary xai-bridge model.

:class:`CaptionScoreModel`'s outputs are one score per token of the image's
own caption: how likely that token stays once parts of the image are masked.
Any perturbation method then explains it unchanged, one target per token
(see :func:`xai_bridge.captions.explain_caption`).

Only numpy and Pillow are imported here; torch/transformers/requests load
with the adapters that need them.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import ModelInputError, ParameterError
from ..models import OutputKind, answer_distinct, image_key
from .protocols import CaptionScorer, CaptionTokens, SelfScoringCaptioner, as_captioner, captions_of, check_captions
from .protocols import describe as describe_captioner

if TYPE_CHECKING:  # pragma: no cover
    from .._turns import Turns

__all__ = ["CaptionRequests", "CaptionScoreModel", "fit_max_side"]


class CaptionScoreModel:
    """A captioner + scorer as a :class:`~xai_bridge.models.Model` with one output per reference token.

    ``predict(images)`` captions each (masked) image and scores the reference
    caption's tokens given that caption (e.g. teacher-forced log-probabilities),
    returning float32 ``(N, T)``. With a self-scoring captioner and no scorer,
    the tokens are scored by the captioner's own language head given the
    image directly. Identical images are captioned once and identical
    captions scored once (memoised per model).

    Args:
        captioner: a captioner (``caption(images) -> list[str]``) or a function ``image -> str``.
        scorer: a :class:`~xai_bridge.captions.protocols.CaptionScorer`,
            or None for a self-scoring captioner.
        reference: the caption to explain (a string, or tokens from ``tokenize``).
        batch_size: largest batch passed to the captioner at once.
        reference_image: the unmasked image whose caption ``reference`` is;
            it is then never sent to the captioner again.
        prompt: the instruction every image is captioned with (a question:
            captions are then answers, and a self-scoring captioner scores the
            reference given the image *and* the question); None: the
            captioner's own.

    Attributes:
        output_kind: ``OutputKind.SCORES``.
        class_names: the reference's token strings (cleaned).
        reference: the :class:`~xai_bridge.captions.protocols.CaptionTokens`.
        captions: how often each caption was produced for the distinct
            images predicted so far (seed 000's grid of masked captions).
    """

    output_kind = OutputKind.SCORES

    def __init__(
        self,
        captioner: Any,
        scorer: CaptionScorer | None,
        reference: str | CaptionTokens,
        batch_size: int = 64,
        reference_image: np.ndarray | None = None,
        prompt: str | None = None,
    ) -> None:
        self.captioner = as_captioner(captioner)
        if scorer is None and not isinstance(self.captioner, SelfScoringCaptioner):
            raise ParameterError(
                f"scorer: {type(self.captioner).__name__} cannot score captions itself; pass "
                "scorer=TeacherForcingScorer(model, tokenizer) (or EmbeddingSimilarityScorer / WordMatchScorer)"
            )
        if scorer is not None and not (
            callable(getattr(scorer, "score", None)) and callable(getattr(scorer, "tokenize", None))
        ):
            raise ModelInputError(
                f"scorer: expected an object with tokenize() and score(), got {type(scorer).__name__}"
            )
        if int(batch_size) <= 0:
            raise ParameterError(f"batch_size: expected a positive integer, got {batch_size}")
        self.scorer = scorer
        self.prompt = None if prompt is None else str(prompt)
        owner = scorer if scorer is not None else self.captioner
        tokens = reference if isinstance(reference, CaptionTokens) else owner.tokenize(str(reference))  # type: ignore[union-attr]
        if len(tokens) == 0:
            raise ModelInputError(f"reference: caption {tokens.text!r} has no tokens to explain")
        self.reference = tokens
        self.class_names = list(tokens.names)
        self.batch_size = int(batch_size)
        self.captions: collections.Counter[str] = collections.Counter()
        self._rows: dict[str, np.ndarray] = {}  # image digest -> (T,) scores
        self._image_captions: dict[str, str] = {}  # image digest -> caption
        self._caption_rows: dict[str, np.ndarray] = {}  # caption -> (T,) scores
        if reference_image is not None and scorer is not None:
            self._image_captions[_digest(np.asarray(reference_image))] = tokens.text

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 ``(N, T)`` token scores for uint8 ``(N, H, W, 3)`` images.

        Each distinct image is captioned and scored once per model (repeats,
        e.g. the unmasked image that most methods evaluate, are memoised).
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ParameterError(f"images: expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        keys = answer_distinct(images, self._rows, self.batch_size, self._score)
        t = len(self.reference)
        if not keys:
            return np.zeros((0, t), np.float32)
        return np.stack([self._rows[k] for k in keys]).astype(np.float32, copy=False)

    def _score(self, keys: list[str], batch: np.ndarray) -> np.ndarray:
        t = len(self.reference)
        if self.scorer is None:
            own_head = self.captioner.score_images  # type: ignore[attr-defined]
            extra = {} if self.prompt is None else {"prompt": self.prompt}
            scores = np.asarray(own_head(self.reference, batch, **extra), np.float32)
            if scores.shape != (len(batch), t):
                raise ModelInputError(
                    f"captioner: score_images() returned shape {scores.shape}, expected {(len(batch), t)}"
                )
            return scores
        unknown = [i for i, k in enumerate(keys) if k not in self._image_captions]
        if unknown:
            fresh = captions_of(self.captioner, batch[unknown], self.prompt)
            self._image_captions.update((keys[i], c) for i, c in zip(unknown, fresh, strict=True))
        captions = [self._image_captions[k] for k in keys]
        self.captions.update(captions)
        new = list(dict.fromkeys(c for c in captions if c not in self._caption_rows))
        if new:
            scores = np.asarray(self.scorer.score(self.reference, new), np.float32)
            if scores.shape != (len(new), t):
                raise ModelInputError(f"scorer: score() returned shape {scores.shape}, expected {(len(new), t)}")
            self._caption_rows.update(zip(new, scores, strict=True))
        return np.stack([self._caption_rows[c] for c in captions])

    def __repr__(self) -> str:
        return (
            f"CaptionScoreModel({self.captioner!r}, {self.scorer!r}, reference={self.reference.text!r}, "
            f"T={len(self.reference)})"
        )


class CaptionRequests:
    """How the caption models of one call ask their captioner: each distinct image once, turn-aware while waiting.

    Several explanations often ask for the same image (the fully masked
    image of every shap explanation): the first asker sends it, the others
    wait for its answer. A captioner that answers in the background
    (``submit``, a remote API) is waited on directly; a blocking captioner
    is called as it is (on a helper thread when the images take turns).
    Only ``turns`` (:mod:`xai_bridge._turns`) decides whose turn it is; how
    many requests are in flight is the captioner's own decision.

    Args:
        captioner: the captioner.
        turns: the turns the images of the call take (None: one image).
    """

    def __init__(self, captioner: Any, turns: Turns | None = None) -> None:
        self.captioner = captioner
        self.turns = turns
        self._submit = getattr(captioner, "submit", None)
        self._blocking = turns.offload(captions_of) if turns is not None else captions_of
        self._answers: dict[str, Future[str]] = {}
        self._lock = threading.Lock()

    def caption(self, images: np.ndarray, prompt: str | None = None) -> list[str]:
        """One caption per image; images already asked for in this call are not sent again."""
        keys = [f"{_digest(img)}|{prompt}" for img in images]  # one answer per image and question
        mine: dict[str, int] = {}
        with self._lock:
            for i, k in enumerate(keys):
                if k not in self._answers:
                    self._answers[k] = Future()
                    mine[k] = i
        if mine:
            try:
                fresh = self._ask(images[list(mine.values())], prompt)
            except BaseException as exc:
                with self._lock:
                    for k in mine:
                        self._answers.pop(k).set_exception(exc)
                raise
            for k, text in zip(mine, fresh, strict=True):
                self._answers[k].set_result(text)
        return [self._wait(self._answers[k]) for k in keys]

    def _ask(self, images: np.ndarray, prompt: str | None) -> list[str]:
        if callable(self._submit):
            future = self._submit(images) if prompt is None else self._submit(images, prompt=prompt)
            return check_captions(self._wait(future), len(images))
        return self._blocking(self.captioner, images, prompt)

    def _wait(self, future: Future[Any]) -> Any:
        return self.turns.wait(future) if self.turns is not None else future.result()

    def describe(self) -> dict[str, Any]:
        """The wrapped captioner's provenance."""
        return describe_captioner(self.captioner)

    def __repr__(self) -> str:
        return f"CaptionRequests({self.captioner!r})"


#: The content key of an image (one name for the caption model's memo; see :func:`~xai_bridge.models.image_key`).
_digest = image_key


def fit_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink an ``(H, W, 3)`` image so its longer side is ``max_side``, keeping the aspect ratio.

    Seed 000 does this with 500 pixels to speed up explanations; smaller
    images are returned unchanged.
    """
    if max_side is None:
        return image
    if int(max_side) < 1:
        raise ParameterError(f"max_side: expected a positive number of pixels, got {max_side}")
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    size = (max(1, int(w * max_side / h)), int(max_side)) if h >= w else (int(max_side), max(1, int(h * max_side / w)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
