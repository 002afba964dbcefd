"""A batch of images answered at once: cached answers reused, duplicates sent once, the rest on a thread pool.

:class:`Batches` is the part of :class:`~xai_bridge.adapters.captioners.client.RemoteClient`
that takes a batch: it checks the images, looks every distinct image up in
the cache, and hands the others to the client's own thread pool
(``max_concurrency`` requests in flight, each sent by
:meth:`~xai_bridge.adapters.captioners._claims.CachedAnswers._fetch`).
:class:`Gathered` is the one future of the batch: its answers in image order,
or its first failure once every request in flight has finished.
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge.errors import ParameterError

from .cache import DiskCache

if TYPE_CHECKING:  # pragma: no cover
    from .client import RemoteStats

__all__ = ["Batches", "Gathered"]


class Gathered(Future[list[Any]]):
    """The answers of one batch: done once every request is; failed with the first failure, in image order.

    A failure cancels the requests that have not started; those in flight
    finish (and reach the cache) before this future reports the failure.
    """

    def __init__(self, keys: list[str], results: dict[str, Any], parts: dict[str, Future[Any]]) -> None:
        super().__init__()
        self.keys = keys
        self.results = results
        self.parts = parts
        self._left = len(parts)
        self._lock = threading.Lock()
        if not parts:
            self.set_result([results[k] for k in keys])
        for part in list(parts.values()):
            part.add_done_callback(self._one_done)

    def stop(self) -> None:
        """Cancel the requests that have not started."""
        for part in self.parts.values():
            part.cancel()

    def _one_done(self, part: Future[Any]) -> None:
        if not part.cancelled() and part.exception() is not None:
            self.stop()
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if not last:
            return
        failures = [p.exception() if not p.cancelled() else CancelledError() for p in self.parts.values()]
        failure = next((f for f in failures if f is not None), None)
        if failure is not None:
            self.set_exception(failure)
            return
        self.results.update((k, p.result()) for k, p in self.parts.items())
        self.set_result([self.results[k] for k in self.keys])


class Batches:
    """Answering a batch of images concurrently (a base class of ``RemoteClient``)."""

    cache: DiskCache | None
    stats: RemoteStats
    max_concurrency: int
    _sessions_lock: threading.Lock
    _executor: ThreadPoolExecutor | None
    _finalizer: weakref.finalize[Any, Any] | None

    if TYPE_CHECKING:  # pragma: no cover  (defined by RemoteClient, CachedAnswers and Exchanges)

        def _checked_prompt(self, prompt: str | None) -> str | None: ...
        def _cache_key(self, image: np.ndarray, prompt: str | None = None) -> str: ...
        def _cached_answer(self, key: str, value: Any, quiet: bool = False) -> Any: ...
        def _fetch(self, key: str, pixels: np.ndarray, prompt: str | None = None) -> Any: ...

    def _answers(self, images: np.ndarray, prompt: str | None = None) -> list[Any]:
        """Answer uint8 ``(N, H, W, 3)`` images concurrently; one answer per image.

        Cached answers are reused, identical images are sent once, and the
        rest go out ``max_concurrency`` at a time. Each answer is written to
        the cache as soon as it arrives.

        Raises:
            AuthenticationError: the key was refused (401/403).
            RemoteCaptionError: a request failed after the allowed retries, was
                redirected, or its answer was too large.
            CacheError: the cache file is damaged or locked.
        """
        answers = self._submit(images, prompt, inline=True)
        try:
            return answers.result()
        except BaseException:
            answers.stop()  # stop what has not started; requests in flight finish (and reach the cache)
            wait(answers.parts.values())
            raise

    def _submit(self, images: np.ndarray, prompt: str | None = None, inline: bool = False) -> Gathered:
        """Start answering the images on the client's threads; the future holds one answer per image.

        With ``inline``, a single image to send is sent from the calling thread.
        """
        arr = np.asarray(images)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise ParameterError(f"images: expected uint8 (N, H, W, 3) RGB, got {arr.dtype} {arr.shape}")
        prompt = self._checked_prompt(prompt)
        keys = [self._cache_key(img, prompt) for img in arr]
        unique: dict[str, np.ndarray] = {}
        for k, img in zip(keys, arr, strict=True):
            unique.setdefault(k, img)
        results: dict[str, Any] = {}
        if self.cache is not None and unique:
            for k, value in self.cache.get_many(unique).items():
                answer = self._cached_answer(k, value)
                if answer is not None:
                    results[k] = answer
        todo = [k for k in unique if k not in results]
        self.stats.add(cache_hits=len(unique) - len(todo), deduplicated=len(keys) - len(unique), captions=len(keys))
        if inline and len(todo) == 1:
            results[todo[0]] = self._fetch(todo[0], unique[todo[0]], prompt)
            todo = []
        parts = {k: self._pool().submit(self._fetch, k, unique[k], prompt) for k in todo}
        return Gathered(keys, results, parts)

    def _pool(self) -> ThreadPoolExecutor:
        """The client's threads, started at the first batch; ``close()`` (or the client's collection) stops them."""
        with self._sessions_lock:  # several images' explanations may ask at once (explain_caption)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="xai-bridge-caption")
                self._finalizer = weakref.finalize(self, self._executor.shutdown, wait=False, cancel_futures=True)
            return self._executor
