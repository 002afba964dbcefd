"""Answers kept in the cache, and claims on images in flight so processes sharing a cache file pay once.

:class:`CachedAnswers` is the part of :class:`~xai_bridge.adapters.captioners.client.RemoteClient`
that talks to its :class:`~xai_bridge.adapters.captioners.cache.DiskCache`:
the cache key of a request (the image's content, the encoding settings, the
endpoint and the request parameters), reading an answer back, and the
in-flight claim taken on an image while its request is out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import DiskCache, cache_key
from .encoding import ImageLimits
from .keys import MalformedAnswer

if TYPE_CHECKING:  # pragma: no cover
    from .client import RemoteStats
    from .retry import RetryPolicy

__all__ = ["CachedAnswers"]

logger = logging.getLogger("xai_bridge.remote")


class CachedAnswers:
    """Cache lookups and in-flight claims of a remote client (a base class of ``RemoteClient``)."""

    _cache_namespace: str
    _answer_field: str
    url: str
    image_format: str
    fit_images: bool
    limits: ImageLimits
    cache: DiskCache | None
    deadline: float
    retry: RetryPolicy
    stats: RemoteStats
    _local: threading.local

    if TYPE_CHECKING:  # pragma: no cover  (defined by RemoteClient and the providers)

        def _request_params(self) -> dict[str, Any]: ...
        def _prompt_params(self, prompt: str) -> dict[str, Any]: ...
        def _validate(self, answer: Any) -> None: ...
        def _refuse(self, answer: Any) -> str | None: ...
        def _checked_prompt(self, prompt: str | None) -> str | None: ...
        def _exchange(self, key: str, pixels: np.ndarray, prompt: str | None = None) -> Any: ...
        def scrub_answer(self, answer: Any) -> Any: ...

    def cached(self, image: np.ndarray, prompt: str | None = None) -> Any:
        """The cached answer about ``image`` (uint8 ``(H, W, 3)``), or None; sends nothing.

        Cost estimates (:func:`xai_bridge.captions.estimate_calls`) use it: a
        cached image is free, and its answer lets a dry run follow the same
        path as the real run.
        """
        if self.cache is None:
            return None
        key = self._cache_key(np.asarray(image), self._checked_prompt(prompt))
        return self._cached_answer(key, self.cache.get(key), quiet=True)

    def would_send(self, image: np.ndarray, prompt: str | None = None) -> bool:
        """Whether asking about ``image`` would be a paid request (its answer is not cached); sends nothing."""
        return self.cached(image, prompt) is None

    def _cache_key(self, image: np.ndarray, prompt: str | None = None) -> str:
        content = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
        encoding = [self.image_format, self.fit_images, list(map(str, dataclasses.astuple(self.limits)))]
        params = self._request_params()
        if prompt is not None:  # the same request as the default prompt shares its entry
            params = {**params, **self._prompt_params(prompt)}
        return cache_key(
            self._cache_namespace,
            type(self).__name__,
            self.url,
            params,
            encoding,
            list(image.shape),
            content,
        )

    def _cached_answer(self, key: str, value: Any, quiet: bool = False) -> Any:
        """The answer of a cache row, or None for a missing row or one that is not an answer (fetched again).

        Scrubbed of the key again: a row an older version stored with an echoed key never reaches a result.
        """
        answer = self.scrub_answer(value.get(self._answer_field)) if isinstance(value, dict) else None
        try:
            self._validate(answer)
            if self._refuse(answer) is None:
                return answer
        except (MalformedAnswer, ValueError, TypeError):
            pass
        if not quiet:
            logger.warning(
                "%s: cache %s holds a bad entry for %s; fetching it again", type(self).__name__, self.cache, key
            )
        return None

    # -- in-flight claims: processes sharing one cache file send each image once
    def _claim_ttl(self, wait: float) -> float:
        return wait + self.deadline + 5.0

    def _refresh_claim(self, wait: float) -> None:
        claim = getattr(self._local, "claim", None)
        if claim is not None and self.cache is not None:
            self.cache.claim(claim[0], claim[1], self._claim_ttl(wait))

    def _await_claim(self, key: str, owner: str) -> Any:
        """Claim ``key`` for this call; or, if another call holds it, wait for its answer.

        Returns:
            The cached answer another call stored, or None once this call holds
            the claim (also after a claim expired, e.g. its process died).
        """
        assert self.cache is not None
        pause = 0.01
        patience = time.monotonic() + self._claim_ttl(0.0) * (self.retry.max_retries + 2)
        while True:
            state = self.cache.claim(key, owner, self._claim_ttl(0.0), force=time.monotonic() > patience)
            if state == "mine":
                return None
            if state == "done":
                answer = self._cached_answer(key, self.cache.get(key))
                if answer is not None:
                    return answer
                self.cache.claim(key, owner, self._claim_ttl(0.0), force=True)
                return None
            time.sleep(pause)
            pause = min(0.25, pause * 2)

    def _fetch(self, key: str, pixels: np.ndarray, prompt: str | None = None) -> Any:
        """Ask about one image: claim it in the cache, send it, read and check the answer, store it."""
        if self.cache is None:
            return self._exchange(key, pixels, prompt)
        owner = uuid.uuid4().hex
        shared = self._await_claim(key, owner)
        if shared is not None:
            self.stats.add(cache_hits=1)
            return shared
        self._local.claim = (key, owner)
        try:
            return self._exchange(key, pixels, prompt)
        finally:
            self._local.claim = None
            self.cache.release(key, owner)
