"""The generic HTTP captioner and tagger: what an answer is (a caption, tags) on top of the shared client.

A provider subclasses :class:`RemoteCaptioner` or :class:`RemoteTagger` and
says how to ask (``_prepare``, ``_request_params``, ``_auth_headers``) and how
to read the answer (``_parse``); the HTTP discipline is
:class:`~xai_bridge.adapters.captioners.client.RemoteClient`'s.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import numpy as np

from .client import RemoteClient
from .keys import MalformedAnswer

__all__ = ["RemoteCaptioner", "RemoteTagger", "caption_text", "tag_list"]


class RemoteCaptioner(RemoteClient):
    """Base class of the HTTP captioners: an answer is one caption (a str).

    See :class:`RemoteClient` for the arguments: the HTTP discipline
    (concurrency, retries, rate limit, cache, image limits, keys) is shared.
    """

    def caption(self, images: np.ndarray, *, prompt: str | None = None) -> list[str]:
        """Caption uint8 ``(N, H, W, 3)`` images concurrently; one string per image.

        Args:
            images: the images.
            prompt: the instruction sent with each image instead of the
                captioner's own (e.g. a question: the caption is then the
                answer); only providers with ``supports_prompt`` take one.

        Cached answers are reused, identical images are sent once, and the
        rest go out ``max_concurrency`` at a time. Each answer is written to
        the cache as soon as it arrives.

        Raises:
            AuthenticationError: the key was refused (401/403).
            RemoteCaptionError: a request failed after the allowed retries, was
                redirected, or its answer was too large.
            CacheError: the cache file is damaged or locked.
        """
        return [str(c) for c in self._answers(images, prompt)]

    def submit(self, images: np.ndarray, *, prompt: str | None = None) -> Future[list[str]]:
        """Start captioning uint8 ``(N, H, W, 3)`` images on the client's threads; returns at once.

        The future's result is what :meth:`caption` returns (one caption per
        image), or its error. The caller may do other work meanwhile (another
        image's explanation); the client alone decides how many requests are
        in flight (``max_concurrency``).
        """
        future: Future[list[str]] = self._submit(images, prompt)
        return future

    def _parse(self, payload: Any) -> str:
        """The caption in a decoded JSON answer; raise :class:`MalformedAnswer` (or a lookup error) if absent."""
        raise NotImplementedError

    def _validate(self, answer: Any) -> None:
        if not isinstance(answer, str):
            raise MalformedAnswer(f"the caption is {type(answer).__name__}, not text")

    def _refuse(self, answer: Any) -> str | None:
        if len(answer) > self.max_caption_chars:
            return (
                f"a caption of {len(answer)} characters, over max_caption_chars={self.max_caption_chars}; "
                "ask for a shorter caption or raise the limit"
            )
        return None


class RemoteTagger(RemoteClient):
    """Base class of the HTTP taggers: an answer is ``{tag name: confidence}`` for one image.

    The HTTP discipline (concurrency, retries, rate limit, cache, image
    limits, keys) is :class:`RemoteClient`'s; answers are cached under their
    own namespace, never mixed with captions. A tagger becomes a black-box
    classifier with :class:`~xai_bridge.captions.TagModel` (``xb.explain``
    wraps one automatically).
    """

    _cache_namespace = "xai-bridge.tags/1"
    _answer_field = "tags"

    def tag(self, images: np.ndarray) -> list[dict[str, float]]:
        """``{tag: confidence}`` for each uint8 ``(N, H, W, 3)`` image, sent concurrently (see :meth:`RemoteClient._answers`)."""
        return [dict(a) for a in self._answers(images)]

    def _parse(self, payload: Any) -> dict[str, float]:
        raise NotImplementedError

    def _validate(self, answer: Any) -> None:
        if not isinstance(answer, dict):
            raise MalformedAnswer(f"the tags are {type(answer).__name__}, not a name -> confidence mapping")
        for name, confidence in answer.items():
            if not isinstance(name, str) or isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
                raise MalformedAnswer(f"tag {name!r:.40}: confidence {confidence!r:.40} is not a number")
            if not 0.0 <= float(confidence) <= 1.0:
                raise MalformedAnswer(f"tag {name!r:.40}: confidence {confidence!r} is outside [0, 1]")

    def _refuse(self, answer: Any) -> str | None:
        long = [n for n in answer if len(n) > self.max_caption_chars]
        if long:
            return f"a tag of {len(long[0])} characters, over max_caption_chars={self.max_caption_chars}"
        return None


def tag_list(values: Any, where: str) -> dict[str, float]:
    """``[{"name": ..., "confidence": ...}, ...]`` -> ``{name: confidence}`` (a repeated name keeps its highest)."""
    if not isinstance(values, list):
        raise MalformedAnswer(f"{where} is {'null' if values is None else type(values).__name__}, not a list")
    tags: dict[str, float] = {}
    for item in values:
        name, confidence = item["name"], item["confidence"]
        if not isinstance(name, str) or isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
            raise MalformedAnswer(f"{where}[]: expected a name (text) and a confidence (number), got {item!r:.80}")
        name = name.strip()
        tags[name] = max(float(confidence), tags.get(name, 0.0))
    return tags


def caption_text(value: Any, where: str) -> str:
    """``value`` stripped, if it is a caption; a ``null`` or a number is a malformed answer, never ``"None"``."""
    if not isinstance(value, str):
        raise MalformedAnswer(f"{where} is {'null' if value is None else type(value).__name__}, not text")
    return value.strip()


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")
