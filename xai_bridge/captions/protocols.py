"""What a captioner and a caption scorer are: the protocols the caption explanations consume.

A captioner turns uint8 RGB ``(N, H, W, 3)`` images into one caption each
(``caption(images) -> list[str]``); one that reads an instruction with the
image (a question: the caption is then the answer) also takes ``prompt=``.
A scorer turns captions into one number per token of a reference caption
(:class:`CaptionTokens`). Implementations that need a third-party library
(transformers models, remote APIs) live in :mod:`xai_bridge.adapters.captioners`;
this module holds the types they implement, the plain-function captioner and
the checked call every caption goes through. Only numpy is imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ModelInputError, ParameterError

__all__ = [
    "CaptionScorer",
    "CaptionTokens",
    "Captioner",
    "ConcurrentCaptioner",
    "FunctionCaptioner",
    "SelfScoringCaptioner",
    "as_captioner",
    "captions_of",
    "check_captions",
    "describe",
]


@dataclass(frozen=True)
class CaptionTokens:
    """A tokenised reference caption: the targets of a caption explanation.

    Attributes:
        text: the caption.
        ids: one token id per target (vocabulary ids; word positions for
            scorers without a vocabulary).
        names: readable token strings (no ``Ġ``/``▁`` markers), one per id.
    """

    text: str
    ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if len(self.ids) != len(self.names):
            raise ModelInputError(f"CaptionTokens: {len(self.ids)} ids but {len(self.names)} names")

    def __len__(self) -> int:
        return len(self.ids)


@runtime_checkable
class CaptionScorer(Protocol):
    """Scores captions against a reference caption, one value per reference token."""

    def tokenize(self, caption: str) -> CaptionTokens:
        """Tokenise a reference caption."""
        ...

    def score(self, reference: CaptionTokens, captions: Sequence[str]) -> np.ndarray:
        """Float ``(len(captions), len(reference))`` scores."""
        ...


@runtime_checkable
class Captioner(Protocol):
    """Captions a batch of uint8 RGB ``(N, H, W, 3)`` images, one string each."""

    def caption(self, images: np.ndarray) -> list[str]:
        """One caption per image."""
        ...


@runtime_checkable
class SelfScoringCaptioner(Captioner, Protocol):
    """A captioner that scores a reference caption's tokens given an image itself."""

    def tokenize(self, caption: str) -> CaptionTokens:
        """Tokenise a reference caption with the captioner's own tokenizer."""
        ...

    def score_images(self, reference: CaptionTokens, images: np.ndarray) -> np.ndarray:
        """Float ``(N, T)`` scores of the reference tokens given each image."""
        ...


@runtime_checkable
class ConcurrentCaptioner(Captioner, Protocol):
    """A captioner that answers in the background (a remote API): ``submit`` returns at once.

    The caller waits on the future however it likes; explaining several
    images, each image's explanation gives its turn on the CPU to the next
    one while it waits (see :mod:`xai_bridge._turns`). The captioner alone
    decides how many requests are in flight (``max_concurrency``).
    """

    max_concurrency: int

    def submit(self, images: np.ndarray, *, prompt: str | None = None) -> Future[list[Any]]:
        """A future of one answer per image (what ``caption`` would return)."""
        ...


def describe(obj: Any) -> dict[str, Any]:
    """JSON provenance of a captioner or scorer (its ``describe()`` or its type); never secrets."""
    fn = getattr(obj, "describe", None)
    if callable(fn):
        return dict(fn())
    return {"type": type(obj).__name__}


def check_images(images: Any) -> np.ndarray:
    """``images`` as a uint8 ``(N, H, W, 3)`` array, or a :class:`ParameterError`."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ParameterError(f"images: expected uint8 (N, H, W, 3) RGB, got {arr.dtype} {arr.shape}")
    return arr


class FunctionCaptioner:
    """Wrap a Python function as a :class:`Captioner`.

    Args:
        fn: ``fn(image) -> str`` on one uint8 ``(H, W, 3)`` image, or with
            ``batched=True`` ``fn(images) -> list[str]`` on ``(N, H, W, 3)``.
            Called with a prompt (``caption(images, prompt=q)``), it gets it
            as a second argument: ``fn(image, q)``.
        batched: whether ``fn`` takes a whole batch.
        name: name recorded in provenance (default: the function's name).

    Example::

        captioner = FunctionCaptioner(lambda image: "a cat" if image.mean() > 100 else "a dog")
        captioner.caption(images)  # -> ["a cat", ...]
    """

    def __init__(self, fn: Callable[..., Any], *, batched: bool = False, name: str | None = None) -> None:
        if not callable(fn):
            raise ModelInputError(f"fn: expected a callable, got {type(fn).__name__}")
        self.fn = fn
        self.batched = bool(batched)
        self.name = name or getattr(fn, "__qualname__", None) or type(fn).__name__

    def caption(self, images: np.ndarray, *, prompt: str | None = None) -> list[str]:
        """Call the function (on copies: it may change them freely), with ``prompt`` as a second argument if given."""
        images = check_images(images)
        extra = () if prompt is None else (prompt,)
        if self.batched:
            out = list(self.fn(images.copy(), *extra))
            if len(out) != len(images):
                raise ModelInputError(f"fn: returned {len(out)} captions for {len(images)} images")
        else:
            out = [self.fn(img.copy(), *extra) for img in images]
        for i, c in enumerate(out):
            if not isinstance(c, str):  # str(None) would be explained as the caption "None"
                raise ParameterError(
                    f"fn: {self.name} returned {type(c).__name__} for image {i}; return the caption as a str"
                )
        return out

    def describe(self) -> dict[str, Any]:
        """JSON provenance."""
        return {"type": type(self).__name__, "function": self.name, "batched": self.batched}

    def __repr__(self) -> str:
        return f"FunctionCaptioner({self.name}, batched={self.batched})"


def as_captioner(obj: Any) -> Captioner:
    """Return ``obj`` if it has ``caption``; wrap a plain function in :class:`FunctionCaptioner`."""
    if callable(getattr(obj, "caption", None)):
        captioner: Captioner = obj
        return captioner
    if callable(obj):
        return FunctionCaptioner(obj)
    raise ParameterError(
        f"captioner: expected an object with caption(images) -> list[str] or a function image -> str, "
        f"got {type(obj).__name__}"
    )


def captions_of(captioner: Captioner, images: np.ndarray, prompt: str | None = None) -> list[str]:
    """``captioner.caption(images)`` (``prompt=`` passed on when given) with the result checked (one str per image)."""
    if prompt is None:
        out = captioner.caption(images)
    else:
        try:
            out = captioner.caption(images, prompt=prompt)  # type: ignore[call-arg]
        except TypeError as exc:
            if "prompt" not in str(exc):
                raise
            raise ParameterError(
                f"captioner: {type(captioner).__name__}.caption() takes no prompt; use a captioner that answers "
                "questions (TransformersVLM, OpenAICaptioner, a function fn(image, question))"
            ) from None
    return check_captions(out, len(images))


def check_captions(out: Any, n: int) -> list[str]:
    """``out`` as a list of ``n`` captions, or a :class:`ModelInputError` naming what the captioner returned."""
    if not isinstance(out, Sequence) or isinstance(out, str) or len(out) != n:
        raise ModelInputError(f"captioner: caption() must return one string per image ({n}), got {out!r:.80}")
    for i, c in enumerate(out):
        if not isinstance(c, str):  # str(None) would be explained as the caption "None"
            raise ModelInputError(
                f"captioner: caption() returned {type(c).__name__} for image {i}; return a str per image"
            )
    return list(out)
