"""Explain image captions: which pixels make each word of the caption.

A captioner (a local model, a remote API or any function) plus a scorer
become an ordinary xai-bridge :class:`~xai_bridge.models.Model` --
:class:`CaptionScoreModel` -- whose outputs are one score per token of the
image's own caption: how likely that token stays once parts of the image are
masked. Any perturbation method (``shap.Partition``, ``lime``, ``rise``,
``builtin.Occlusion``) then explains it unchanged, with one target per token.
This is seed 000 (Azure captions, shap's Partition explainer, distilbart
teacher forcing) in one call::

    from xai_bridge.caption import explain_caption
    from xai_bridge.adapters.models.remote import AzureVisionV31Captioner
    from xai_bridge.adapters.models.scorers import TeacherForcingScorer

    captioner = AzureVisionV31Captioner(endpoint)          # key from $AZURE_VISION_KEY
    scorer = TeacherForcingScorer.from_pretrained("sshleifer/distilbart-xsum-12-6")
    [exp] = explain_caption(captioner, "cat.jpg", scorer, method="shap.Partition", max_evals=300)
    exp.target_names  # [['a', 'cat', 'sitting', ...]]

A local transformers captioner (:class:`~xai_bridge.adapters.models.captioners.TransformersCaptioner`)
needs no scorer: it scores the caption with its own language head.

Only numpy and Pillow are imported here; torch/transformers/requests load
with the adapters that need them.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .explanation import Explanation
from .images import Layout, load_images
from .models import OutputKind

if TYPE_CHECKING:  # pragma: no cover
    from .adapters.models.captioners import Captioner
    from .adapters.models.scorers import CaptionScorer, CaptionTokens
    from .registry import Registry

__all__ = ["BUDGET_PARAMS", "CaptionScoreModel", "explain_caption", "fit_max_side"]

#: The parameter that sets the number of model evaluations of each method.
BUDGET_PARAMS: dict[str, str] = {"shap.Partition": "max_evals", "lime.Lime": "num_samples", "builtin.RISE": "n_masks"}


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
        scorer: a :class:`~xai_bridge.adapters.models.scorers.CaptionScorer`,
            or None for a self-scoring captioner.
        reference: the caption to explain (a string, or tokens from ``tokenize``).
        batch_size: largest batch passed to the captioner at once.
        reference_image: the unmasked image whose caption ``reference`` is;
            it is then never sent to the captioner again.

    Attributes:
        output_kind: ``OutputKind.SCORES``.
        class_names: the reference's token strings (cleaned).
        reference: the :class:`~xai_bridge.adapters.models.scorers.CaptionTokens`.
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
    ) -> None:
        from .adapters.models.captioners import SelfScoringCaptioner, as_captioner
        from .adapters.models.scorers import CaptionTokens

        self.captioner = as_captioner(captioner)
        if scorer is None and not isinstance(self.captioner, SelfScoringCaptioner):
            raise TypeError(
                f"scorer: {type(self.captioner).__name__} cannot score captions itself; pass "
                "scorer=TeacherForcingScorer(model, tokenizer) (or EmbeddingSimilarityScorer / WordMatchScorer)"
            )
        if scorer is not None and not (
            callable(getattr(scorer, "score", None)) and callable(getattr(scorer, "tokenize", None))
        ):
            raise TypeError(f"scorer: expected an object with tokenize() and score(), got {type(scorer).__name__}")
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        self.scorer = scorer
        owner = scorer if scorer is not None else self.captioner
        if isinstance(reference, CaptionTokens):
            tokens = reference
        else:
            tokens = owner.tokenize(str(reference))  # type: ignore[union-attr]
        if len(tokens) == 0:
            raise ValueError(f"reference: caption {tokens.text!r} has no tokens to explain")
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
            raise ValueError(f"images: expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        keys = [_digest(img) for img in images]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        missing = [k for k in first if k not in self._rows]
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            batch = np.stack([images[first[k]] for k in chunk])
            self._rows.update(zip(chunk, self._score(chunk, batch), strict=False))
        t = len(self.reference)
        if not keys:
            return np.zeros((0, t), np.float32)
        return np.stack([self._rows[k] for k in keys]).astype(np.float32, copy=False)

    def _score(self, keys: list[str], batch: np.ndarray) -> np.ndarray:
        from .adapters.models.captioners import captions_of

        t = len(self.reference)
        if self.scorer is None:
            own_head = self.captioner.score_images  # type: ignore[attr-defined]
            scores = np.asarray(own_head(self.reference, batch), np.float32)
            if scores.shape != (len(batch), t):
                raise ValueError(f"captioner: score_images() returned shape {scores.shape}, expected {(len(batch), t)}")
            return scores
        unknown = [i for i, k in enumerate(keys) if k not in self._image_captions]
        if unknown:
            fresh = captions_of(self.captioner, batch[unknown])
            self._image_captions.update((keys[i], c) for i, c in zip(unknown, fresh, strict=False))
        captions = [self._image_captions[k] for k in keys]
        self.captions.update(captions)
        new = list(dict.fromkeys(c for c in captions if c not in self._caption_rows))
        if new:
            scores = np.asarray(self.scorer.score(self.reference, new), np.float32)
            if scores.shape != (len(new), t):
                raise ValueError(f"scorer: score() returned shape {scores.shape}, expected {(len(new), t)}")
            self._caption_rows.update(zip(new, scores, strict=False))
        return np.stack([self._caption_rows[c] for c in captions])

    def __repr__(self) -> str:
        return (
            f"CaptionScoreModel({self.captioner!r}, {self.scorer!r}, reference={self.reference.text!r}, "
            f"T={len(self.reference)})"
        )


def _digest(image: np.ndarray) -> str:
    arr = np.ascontiguousarray(image)
    return hashlib.blake2b(arr.tobytes() + repr(arr.shape).encode(), digest_size=16).hexdigest()


def fit_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink an ``(H, W, 3)`` image so its longer side is ``max_side``, keeping the aspect ratio.

    Seed 000 does this with 500 pixels to speed up explanations; smaller
    images are returned unchanged.
    """
    if max_side is None:
        return image
    if int(max_side) < 1:
        raise ValueError(f"max_side: expected a positive number of pixels, got {max_side}")
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    size = (max(1, int(w * max_side / h)), int(max_side)) if h >= w else (int(max_side), max(1, int(h * max_side / w)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


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
    **params: Any,
) -> list[Explanation]:
    """Explain each image's caption, one target per caption token.

    For every image: caption it (unless ``captions`` are given), tokenise the
    caption, wrap captioner + scorer in a :class:`CaptionScoreModel` and run
    :func:`xai_bridge.explain` with ``method``. Each image has its own caption,
    so each gets its own :class:`~xai_bridge.Explanation` (``N == 1``).

    Args:
        captioner: a captioner (local, remote, function) or a function ``image -> str``.
        images: anything :func:`~xai_bridge.load_images` reads; a list may mix sizes.
        scorer: a caption scorer; a path/name for
            :meth:`~xai_bridge.adapters.models.scorers.TeacherForcingScorer.from_pretrained`;
            or None for a self-scoring (local transformers) captioner.
        method: a perturbation method: ``"shap.Partition"`` (seed 000), ``"lime"``,
            ``"rise"``, ``"builtin.Occlusion"``...
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
        **params: the method's own parameters.

    Returns:
        One Explanation per image: ``targets`` are the token ids,
        ``target_names`` the cleaned token strings, ``scores`` the tokens'
        scores on the unmasked image, and ``params`` also records the caption,
        the captioner and the scorer (never an API key).
    """
    from .adapters.models.captioners import as_captioner, describe
    from .explain import explain

    captioner = as_captioner(captioner)
    if isinstance(scorer, str):
        from .adapters.models.scorers import TeacherForcingScorer

        scorer = TeacherForcingScorer.from_pretrained(scorer)
    rows = [fit_max_side(img, max_side) for img in _image_rows(images, layout)]
    if captions is not None:
        captions = [str(c) for c in ([captions] if isinstance(captions, str) else captions)]
        if len(captions) != len(rows):
            raise ValueError(f"captions: got {len(captions)} captions for {len(rows)} images; pass one per image")
    method_params = dict(params)
    from .registry import default_registry

    budget = BUDGET_PARAMS.get((registry or default_registry()).spec(method).name)
    if budget is not None and max_evals is not None:
        method_params.setdefault(budget, int(max_evals))
    results: list[Explanation] = []
    for i, image in enumerate(rows):
        batch = image[None]
        if captions is not None:
            reference: Any = captions[i]
        elif scorer is None and callable(getattr(captioner, "caption_tokens", None)):
            reference = captioner.caption_tokens(batch)[0]  # the generated ids themselves
        else:
            from .adapters.models.captioners import captions_of

            reference = captions_of(captioner, batch)[0]
        model = CaptionScoreModel(
            captioner,
            scorer,
            reference,
            batch_size=model_batch_size,
            reference_image=image if captions is None else None,
        )
        tokens = model.reference
        exp = explain(
            model, batch, method, targets=[list(range(len(tokens)))], seed=seed, registry=registry, **method_params
        )
        provenance = {
            **dict(exp.params),
            "caption": tokens.text,
            "caption_tokens": list(tokens.names),
            "captioner": describe(captioner),
            "scorer": describe(scorer) if scorer is not None else "captioner's own language head",
            "distinct_captions": len(model.captions),
        }
        results.append(replace(exp, targets=np.asarray([tokens.ids], np.int64), params=provenance))
    return results
