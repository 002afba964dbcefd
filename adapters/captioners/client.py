"""The HTTP client every remote captioner and tagger shares; the providers live in azure.py, openai.py, huggingface.py.

It does what seed 000's one-request-at-a-time loop did not:

* **concurrency** -- a batch is answered by the client's own thread pool
  (one ``requests.Session`` per thread, ``max_concurrency`` requests in
  flight); identical images in a batch are sent once. ``submit`` returns a
  future at once, so a caller can do other work (explain another image)
  while the answers come in: the client alone decides how many requests
  are in flight (``_batch.py``; one request and its answer: ``_exchange.py``);
* **retries** -- 429, 408 and 5xx answers, timeouts, dropped connections and
  faults in the body are retried with exponential backoff and jitter,
  honouring ``Retry-After``; 401/403 fail at once; malformed JSON is retried
  a bounded number of times, then fails clearly. The :class:`~.retry.RetryPolicy`
  is applied by an adapter mounted on each session (``_transport.py``), which
  also refuses every redirect and caps the answer's size;
* **rate limit** -- an optional client-side token bucket (``retry.py``);
* **image limits** -- images are encoded in memory and fitted to the API's
  limits before sending (``encoding.py``);
* **cache** -- answers are stored in a persistent sqlite cache keyed by the
  image content, the encoding settings, the endpoint and the request
  parameters; an in-flight claim per image lets processes sharing the file
  pay once (``_claims.py``, ``cache.py``);
* **secrets** -- the key is checked up front and only ever put in a request
  header; every message is scrubbed of it (``keys.py``).

A provider subclasses :class:`~xai_bridge.adapters.captioners.remote.RemoteCaptioner`
(or ``RemoteTagger``) and says how to ask (``_prepare``, ``_request_params``,
``_auth_headers``) and how to read the answer (``_parse``).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from xai_bridge.errors import LibraryNotInstalledError, ParameterError

from ._batch import Batches
from ._claims import CachedAnswers
from ._exchange import Exchanges
from .cache import DiskCache, open_cache
from .encoding import EncodedImage, ImageLimits, _check_format
from .keys import AuthenticationError, Secret, check_key
from .retry import RateLimiter, RetryPolicy

__all__ = ["DEFAULT_CONCURRENCY", "RemoteClient", "RemoteStats"]

logger = logging.getLogger("xai_bridge.remote")

#: Requests a remote captioner keeps in flight by default (above shap's batch of 50).
DEFAULT_CONCURRENCY = 64


class RemoteStats:
    """Thread-safe counters of a remote captioner (cumulative over its lifetime).

    Attributes:
        requests: HTTP requests sent (retries included).
        retries: retries after a transient failure or malformed answer.
        cache_hits: captions served from the on-disk cache.
        deduplicated: images answered by an identical image in the same batch.
        captions: captions returned.
    """

    _FIELDS = ("requests", "retries", "cache_hits", "deduplicated", "captions")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = self.retries = self.cache_hits = self.deduplicated = self.captions = 0

    def add(self, **counts: int) -> None:
        """Add to counters atomically."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + int(value))

    def snapshot(self) -> dict[str, int]:
        """The counters as a dict."""
        with self._lock:
            return {name: getattr(self, name) for name in self._FIELDS}

    def __repr__(self) -> str:
        return f"RemoteStats({self.snapshot()})"


@dataclass(frozen=True)
class _Call:
    url: str
    params: Mapping[str, str]
    headers: Mapping[str, str]
    data: bytes | None = None
    json: Any = None


_Client = TypeVar("_Client", bound="RemoteClient")


class RemoteClient(Batches, CachedAnswers, Exchanges):
    """Base class of the HTTP clients (captioners, taggers); subclasses say how to ask and how to read the answer.

    Args:
        url: the endpoint URL requests are posted to.
        key: the API key (default: the ``key_env`` environment variable); checked
            up front (see :func:`check_key`).
        key_env: environment variable holding the key.
        max_concurrency: requests in flight at once (default 64: more than shap's
            batch of 50, so a batch of masked images goes out in one round trip).
        timeout: seconds, or ``(connect, read)`` seconds: socket timeouts of one attempt.
        deadline: most seconds one attempt may take from sending to the last
            byte of the answer, however slowly the server trickles it
            (default: ``connect + read``, or ``timeout`` when it is one number).
        retry: the :class:`RetryPolicy`.
        rate_limit: client-side limit in requests per second (None: none).
        burst: token-bucket size for ``rate_limit``.
        cache: a :class:`~xai_bridge.adapters.captioners.cache.DiskCache`, a path, ``"auto"``
            (``~/.cache/xai-bridge/captions.sqlite``) or None for no cache.
        image_format: encoding of the images sent (default: the provider's
            ``default_image_format``, the cheapest lossless encoding its API
            accepts: BMP for Azure, which costs ~1/70 of PNG's CPU; PNG for the others).
        fit_images: resize images outside the API's limits instead of raising.
        max_response_bytes: largest answer body accepted (decoded); larger ones
            fail at once, without retries.
        max_caption_chars: longest caption accepted; longer ones fail (and are not cached).

    Redirects are never followed: a 3xx answer raises :class:`RemoteCaptionError`
    naming it. With a cache, each image is claimed while its request is in
    flight, so processes sharing the cache file pay once per image.

    An answer is whatever ``_parse`` reads (a caption, a ``{tag: confidence}``
    dict); :meth:`_answers` is the batch call that captioners (``caption``) and
    taggers (``tag``) expose under their own name. Providers whose API takes
    an instruction (``supports_prompt``) also accept a per-call ``prompt``; it
    is part of the request, hence of the cache key.
    """

    #: cache namespace and the field of a cache row that holds the answer
    _cache_namespace: str = "xai-bridge.caption/1"
    _answer_field: str = "caption"
    #: whether a call may carry its own prompt (a question, an instruction)
    supports_prompt: bool = False

    #: what the API accepts
    limits: ImageLimits = ImageLimits()
    #: environment variable read when no key is passed
    default_key_env: str | None = None
    #: whether requests without a key are refused up front
    key_required: bool = False
    #: the encoding used unless ``image_format=`` says otherwise: the cheapest lossless one the API accepts
    default_image_format: str = "PNG"

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        key_env: str | None = None,
        max_concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float | tuple[float, float] = (5.0, 60.0),
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: float | None = None,
        burst: int = 1,
        cache: DiskCache | str | os.PathLike[str] | bool | None = "auto",
        image_format: str | None = None,
        fit_images: bool = True,
        max_response_bytes: int = 1 << 20,
        max_caption_chars: int = 2000,
    ) -> None:
        try:
            import requests  # noqa: F401  (fail early with a clear message if missing)
        except ImportError:
            raise LibraryNotInstalledError(
                f"{type(self).__name__}: needs the requests package; pip install 'xai-bridge[text]'"
            ) from None
        if not isinstance(url, str) or "://" not in url:
            raise ParameterError(f"url: expected an http(s) URL, got {url!r}")
        if int(max_concurrency) < 1:
            raise ParameterError(f"max_concurrency: expected >= 1, got {max_concurrency}")
        self.url = url
        self.key_env = key_env if key_env is not None else self.default_key_env
        self._key: Secret | None = self._read_key(key)
        self.max_concurrency = int(max_concurrency)
        self.timeout = timeout
        budget = sum(timeout) if isinstance(timeout, tuple) else float(timeout)
        self.deadline = float(deadline) if deadline is not None else budget
        if not self.deadline > 0:
            raise ParameterError(f"deadline: expected seconds > 0, got {deadline}")
        for name, value in (("max_response_bytes", max_response_bytes), ("max_caption_chars", max_caption_chars)):
            if int(value) < 1:
                raise ParameterError(f"{name}: expected a positive integer, got {value}")
        self.max_response_bytes = int(max_response_bytes)
        self.max_caption_chars = int(max_caption_chars)
        self.retry = retry or RetryPolicy()
        self.limiter = RateLimiter(rate_limit, burst) if rate_limit else None
        self.image_format = _check_format(image_format or self.default_image_format, self.limits)
        self.fit_images = bool(fit_images)
        self.cache = open_cache(cache, "captions.sqlite")
        self.stats = RemoteStats()
        self._rng = random.Random(self.retry.seed)
        self._rng_lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._sessions_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def _read_key(self, key: str | None) -> Secret | None:
        """The key passed, or the one in ``$key_env``, checked; None where neither is and none is required."""
        if key is not None:
            raw_key: str | None = key
            source = "key="
        else:
            raw_key = os.environ.get(self.key_env) if self.key_env else None
            source = f"${self.key_env}"
        secret = check_key(raw_key, source) if raw_key else None
        if secret is None and self.key_required:
            where = f" or set the {self.key_env} environment variable" if self.key_env else ""
            raise AuthenticationError(f"key: {type(self).__name__} needs an API key; pass key=...{where}")
        return secret

    # -- what subclasses define
    def _request_params(self) -> dict[str, Any]:
        """Parameters that change the answer (part of the cache key and provenance)."""
        return {}

    def _auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def _prompt_params(self, prompt: str) -> dict[str, Any]:
        """The request parameters a per-call ``prompt`` replaces (providers with ``supports_prompt``)."""
        raise NotImplementedError

    def _prepare(self, image: EncodedImage, prompt: str | None = None) -> _Call:
        raise NotImplementedError

    def _parse(self, payload: Any) -> Any:
        """The answer in a decoded JSON body; raise :class:`MalformedAnswer` (or a lookup error) if absent."""
        raise NotImplementedError

    def _received(self, answer: Any, image: EncodedImage) -> Any:
        """What is kept of a parsed answer, knowing the image as sent (a detector records its size); default: as is."""
        return answer

    def _validate(self, answer: Any) -> None:
        """Raise :class:`MalformedAnswer` unless ``answer`` is what ``_parse`` promises (retried, never cached)."""

    def _refuse(self, answer: Any) -> str | None:
        """Why a well-formed answer is refused for good (too large), or None; checked before caching."""
        return None

    # -- public API

    def _checked_prompt(self, prompt: str | None) -> str | None:
        if prompt is None:
            return None
        if not self.supports_prompt:
            raise ParameterError(
                f"prompt: {type(self).__name__} sends no instruction with the image, got prompt={prompt!r:.60}; "
                "use a provider that takes one (OpenAICaptioner) or leave prompt=None"
            )
        if not isinstance(prompt, str) or not prompt.strip():
            raise ParameterError(f"prompt: expected a non-empty str, got {prompt!r:.60}")
        return prompt

    def describe(self) -> dict[str, Any]:
        """JSON provenance: type, URL and request parameters; never the key."""
        return {
            "type": type(self).__name__,
            "url": self._scrub(self.url),
            "params": self._request_params(),
            "image_format": self.image_format,
        }

    def close(self) -> None:
        """Wait for requests in flight, stop the threads, close the sessions and the cache (idempotent)."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self: _Client) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        key = "'***'" if self._key is not None else "None"
        return (
            f"{type(self).__name__}(url={self._scrub(self.url)!r}, key={key}, max_concurrency={self.max_concurrency})"
        )

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} holds an API key and open connections; it cannot be pickled")

    # -- internals

    def _scrub(self, text: str) -> str:
        if self._key is not None and self._key.reveal():
            text = text.replace(self._key.reveal(), "***")
        return text
