"""Image taggers (cloud vision tags) as black-box classifiers.

:class:`TagModel` turns a tagger -- ``tag(images) -> [{name: confidence}]``,
e.g. :class:`~xai_bridge.adapters.captioners.azure.AzureVision40Tagger`, or a
function ``image -> {name: confidence}`` -- into an ordinary
:class:`~xai_bridge.models.Model`: its outputs are the confidences of the tags
found on the unmasked image (a tag missing from a masked image's answer scores
0), its class names the tag names. ``xb.explain`` wraps a tagger in one
(:func:`xai_bridge.as_model` recognises ``tag()``), so "why does the API say
*dog*?" is::

    tagger = AzureVision40Tagger(endpoint)                      # key from $AZURE_VISION_KEY
    exp = xb.explain(tagger, "dog.jpg", "shap.Partition", targets="dog", max_evals=200)

:func:`xai_bridge.captions.estimate_calls` counts what such a run would pay.
Only numpy is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge.errors import ModelInputError, ParameterError
from xai_bridge.models import Model, OutputKind, answer_distinct

if TYPE_CHECKING:
    from ._table import ModelRequest

__all__ = ["TagModel", "checked_answer", "is_tagger", "wrap"]


def is_tagger(obj: Any) -> bool:
    """``as_model``'s test: an object with ``tag(images)`` and no ``predict``."""
    return callable(getattr(obj, "tag", None)) and not callable(getattr(obj, "predict", None))


def wrap(tagger: Any, request: ModelRequest) -> Model:
    """``as_model``'s entry for taggers: a classifier over the tags of the unmasked image."""
    return TagModel(tagger, batch_size=request.batch_size)


class TagModel:
    """A tagger as a :class:`~xai_bridge.models.Model`: one output per tag of the unmasked image.

    ``predict(images)`` returns float32 ``(N, K)``: the confidence of each of
    the ``K`` tags (``class_names``), 0 for a tag absent from an image's answer.
    The tags are ``tags`` when given; otherwise those the tagger finds on the
    images of the *first* ``predict`` call -- the unmasked images, which is
    what :func:`xai_bridge.explain` sends first -- ordered by their highest
    confidence. Each distinct image is tagged once per model (the unmasked
    image that methods evaluate again is never sent twice).

    Args:
        tagger: an object with ``tag(images) -> list[dict[str, float]]`` on
            uint8 ``(N, H, W, 3)`` images, or a function ``image -> dict``.
        tags: the tags to explain (default: found on the first images).
        min_confidence: tags found below this are not outputs (when ``tags`` is None).
        batch_size: largest batch passed to the tagger at once (remote taggers
            send a batch concurrently).

    Attributes:
        output_kind: ``OutputKind.SCORES`` (independent confidences, not a softmax).
        class_names: the tag names (None until known).
        answers: the tagger's answers so far, per image digest.
    """

    output_kind = OutputKind.SCORES

    def __init__(
        self,
        tagger: Any,
        tags: Sequence[str] | None = None,
        *,
        min_confidence: float = 0.0,
        batch_size: int = 64,
    ) -> None:
        if callable(getattr(tagger, "tag", None)):
            self._tag: Callable[[np.ndarray], list[Mapping[str, float]]] = tagger.tag
        elif callable(tagger):
            self._tag = lambda images: [tagger(img.copy()) for img in images]
        else:
            raise ModelInputError(
                f"tagger: expected an object with tag(images) -> [{{name: confidence}}] or a function "
                f"image -> {{name: confidence}}, got {type(tagger).__name__}"
            )
        if int(batch_size) <= 0:
            raise ParameterError(f"batch_size: expected a positive integer, got {batch_size}; pass e.g. 64")
        if not (isinstance(min_confidence, (int, float)) and 0.0 <= float(min_confidence) <= 1.0):
            raise ParameterError(f"min_confidence: expected a number in [0, 1], got {min_confidence!r}")
        self.tagger = tagger
        self.min_confidence = float(min_confidence)
        self.batch_size = int(batch_size)
        self.class_names: Sequence[str] | None = None
        if tags is not None:
            names = [tags] if isinstance(tags, str) else list(tags)
            if not names or not all(isinstance(t, str) for t in names) or len(set(names)) != len(names):
                raise ParameterError(f"tags: expected distinct tag names (str), got {tags!r}")
            self.class_names = names
        self.answers: dict[str, dict[str, float]] = {}

    @property
    def output_count(self) -> int | None:
        """Number of tags, once known (None before the first ``predict`` when ``tags`` was not given)."""
        return None if self.class_names is None else len(self.class_names)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 ``(N, K)`` tag confidences for uint8 ``(N, H, W, 3)`` images."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ModelInputError(f"images: expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        keys = answer_distinct(images, self.answers, self.batch_size, self._checked_tags)
        if self.class_names is None:
            self.class_names = self._vocabulary([self.answers[k] for k in dict.fromkeys(keys)])
        names = self.class_names
        out = np.zeros((len(keys), len(names)), np.float32)
        for i, k in enumerate(keys):
            answer = self.answers[k]
            out[i] = [answer.get(n, 0.0) for n in names]
        return out

    def _checked_tags(self, keys: list[str], batch: np.ndarray) -> list[dict[str, float]]:
        found = list(self._tag(batch))
        if len(found) != len(keys):
            raise ModelInputError(f"tagger: tag() returned {len(found)} answers for {len(keys)} images")
        return [checked_answer(a) for a in found]

    def vocabulary(self, answers: Sequence[Any]) -> list[str]:
        """The tags a run would explain, given the tagger's raw answers for the unmasked image(s).

        Used by :func:`~xai_bridge.captions.estimate_calls` to name the real run's targets.
        """
        return self._vocabulary([checked_answer(a) for a in answers])

    def _vocabulary(self, answers: list[dict[str, float]]) -> list[str]:
        best: dict[str, float] = {}
        for answer in answers:
            for name, confidence in answer.items():
                if confidence >= self.min_confidence:
                    best[name] = max(confidence, best.get(name, 0.0))
        if not best:
            raise ModelInputError(
                "tagger: found no tags on the image(s), so there is nothing to explain; lower min_confidence "
                "or pass tags=[...]"
            )
        return sorted(best, key=lambda n: (-best[n], n))

    def describe(self) -> dict[str, Any]:
        """JSON provenance (the tagger's, never a key)."""
        fn = getattr(self.tagger, "describe", None)
        return {"type": type(self).__name__, "tagger": dict(fn()) if callable(fn) else type(self.tagger).__name__}

    def __repr__(self) -> str:
        k = "?" if self.class_names is None else len(self.class_names)
        return f"TagModel({self.tagger!r}, tags={k})"


def checked_answer(answer: Any) -> dict[str, float]:
    """One answer of a tagger as ``{name: confidence}``, or the one-line error saying what is wrong."""
    if not isinstance(answer, Mapping):
        raise ModelInputError(f"tagger: expected {{name: confidence}} per image, got {type(answer).__name__}")
    out: dict[str, float] = {}
    for name, confidence in answer.items():
        number = isinstance(confidence, (int, float, np.floating, np.integer)) and not isinstance(confidence, bool)
        value = float(confidence) if number else math.nan
        if not isinstance(name, str) or not math.isfinite(value):
            raise ModelInputError(f"tagger: tag {name!r:.40} has confidence {confidence!r:.40}; expected a number")
        out[name] = value
    return out
