"""The HTTP client every remote captioner shares; the providers live in azure.py, openai.py, huggingface.py.

It does what seed 000's one-request-at-a-time loop did not:

* **concurrency** -- a batch is captioned by a thread pool (one
  ``requests.Session`` per thread, ``max_concurrency`` requests in flight);
  identical images in a batch are sent once;
* **retries** -- 429, 408 and 5xx answers, timeouts, dropped connections and
  faults in the body (a reset, a short body, bad gzip, a passed ``deadline``)
  are retried with exponential backoff and jitter, honouring ``Retry-After``
  (seconds or an HTTP date) and ``retry-after-ms``; 401/403 fail at once;
  malformed JSON (a ``null`` caption included) is retried a bounded number
  of times, then fails clearly. The policy is applied by an adapter mounted
  on each session (``_transport.py``), which also refuses every redirect and
  caps the answer's size;
* **rate limit** -- an optional client-side token bucket (requests/second);
* **image limits** -- images are encoded in memory (no temporary files) and
  fitted to the API's limits before sending (e.g. Azure v3.1: < 4 MB, at
  least 50x50, JPEG/PNG/GIF/BMP), resized with the aspect ratio kept;
* **cache** -- answers are stored in a persistent sqlite cache keyed by the
  SHA-256 of the image content (pixels and shape, plus the encoding
  settings: the encoded bytes are a deterministic function of these, and a
  cache hit then costs no encoding), the endpoint URL and the request
  parameters, so a re-run or a crashed run never pays twice; an in-flight
  claim per image lets processes sharing the file pay once;
* **secrets** -- the key comes from an argument or an environment variable, is
  checked up front (:func:`check_key`) and is only ever put in a request
  header: never in logs, cache keys or values, reprs, ``describe()`` or error
  messages (each is scrubbed of it), and never sent after a redirect.

A provider subclasses :class:`RemoteCaptioner` and says how to ask
(``_prepare``, ``_request_params``, ``_auth_headers``) and how to read the
answer (``_parse``).
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import io
import logging
import math
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from xai_bridge.errors import LibraryNotInstalledError, ParameterError, XaiBridgeError

from .cache import DiskCache, cache_key, open_cache

__all__ = [
    "DEFAULT_CONCURRENCY",
    "AuthenticationError",
    "EncodedImage",
    "ImageLimits",
    "InvalidKeyError",
    "MalformedAnswer",
    "RateLimiter",
    "RemoteCaptionError",
    "RemoteCaptioner",
    "RemoteClient",
    "RemoteStats",
    "RemoteTagger",
    "RetryPolicy",
    "Secret",
    "caption_text",
    "check_key",
    "encode_image",
    "parse_retry_after",
    "tag_list",
]

logger = logging.getLogger("xai_bridge.remote")

#: Requests a remote captioner keeps in flight by default (above shap's batch of 50).
DEFAULT_CONCURRENCY = 64


class RemoteCaptionError(XaiBridgeError, RuntimeError):
    """A remote captioning request failed for good (after the allowed retries)."""


class AuthenticationError(RemoteCaptionError, PermissionError):
    """The endpoint refused the API key (HTTP 401/403), or no key was given."""


class InvalidKeyError(AuthenticationError, ValueError):
    """The API key cannot be a key (whitespace, a newline, control or non-ASCII characters).

    Raised before anything is sent; the message never contains the key.
    """


class MalformedAnswer(TypeError, ValueError):
    """An answer that is not what the API promises (e.g. a ``null`` caption); retried, then reported."""


def check_key(value: object, source: str = "key") -> Secret:
    """Validate an API key up front and wrap it in a :class:`Secret`.

    A key is printable ASCII without spaces (Azure, OpenAI and Hugging Face
    keys all are). Anything else -- typically a trailing newline read from a
    file -- would otherwise fail deep in ``http.client`` with an exception
    whose message holds the whole key.

    Args:
        value: the key.
        source: where it came from, for the message (``"key"`` or ``"$AZURE_VISION_KEY"``).

    Raises:
        InvalidKeyError: naming the position and kind of the first bad character, never the key.
    """
    if isinstance(value, Secret):
        value = value.reveal()
    if not isinstance(value, str):
        raise InvalidKeyError(f"key: expected a str, got {type(value).__name__}")
    for i, ch in enumerate(value):
        if not "!" <= ch <= "~":
            if ch in "\r\n":
                kind = "a line break"
            elif ch.isspace():
                kind = "whitespace"
            elif ord(ch) < 32 or ord(ch) == 127:
                kind = "a control character"
            else:
                kind = "a non-ASCII character"
            raise InvalidKeyError(
                f"key: the API key from {source} has {kind} at position {i} of {len(value)}; keys are printable "
                "ASCII without spaces; strip it (e.g. key.strip()) or fix the file or variable it came from"
            )
    return Secret(value)


class Secret:
    """A string that shows as ``'***'`` in every repr/str and refuses to be pickled."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)

    def reveal(self) -> str:
        """The secret itself; only for building a request header."""
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("Secret: API keys are never pickled or saved")


# ----------------------------------------------------------------- policies
@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry.

    Attributes:
        max_retries: retries after a retryable answer (429, 408, 5xx), a
            timeout, a dropped connection or a broken body (reset, short,
            bad gzip, past the deadline).
        backoff: first backoff in seconds; doubles each retry.
        max_backoff: largest backoff (without ``Retry-After``).
        jitter: backoff is multiplied by ``1 + jitter * U[0, 1)``.
        max_retry_after: longest ``Retry-After`` honoured; a longer one fails
            with a clear error instead of stalling the run.
        max_malformed: retries of answers that are not the expected JSON.
        retry_statuses: HTTP statuses that are retried.
        seed: seed of the jitter (None: random).
    """

    max_retries: int = 6
    backoff: float = 0.5
    max_backoff: float = 30.0
    jitter: float = 0.25
    max_retry_after: float = 120.0
    max_malformed: int = 2
    retry_statuses: tuple[int, ...] = (408, 429, 500, 502, 503, 504)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.max_malformed < 0:
            raise ParameterError("retry: max_retries and max_malformed must be >= 0")
        if self.backoff < 0 or self.max_backoff < 0 or self.jitter < 0:
            raise ParameterError("retry: backoff, max_backoff and jitter must be >= 0")

    def backoff_delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (no ``Retry-After``)."""
        return min(self.max_backoff, self.backoff * 2.0**attempt) * (1.0 + self.jitter * rng.random())


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``x-ms-retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        if name in lowered:
            try:
                return max(0.0, float(lowered[name]) / 1000.0)
            except ValueError:
                pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


class RateLimiter:
    """A thread-safe token bucket: at most ``rate`` requests per second, bursts up to ``burst``.

    Each caller reserves a token under the lock and sleeps outside it, so
    waiting threads are served in order and never hold the lock.

    Args:
        rate: requests per second (> 0).
        burst: bucket size.
        clock: monotonic clock (injectable for tests).
        sleep: sleep function (injectable for tests).
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0:
            raise ParameterError(f"rate_limit: expected requests per second > 0, got {rate}")
        if int(burst) < 1:
            raise ParameterError(f"burst: expected >= 1, got {burst}")
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last = clock()

    def acquire(self) -> float:
        """Take one token, sleeping until it is available; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate}, burst={self.burst})"


# ------------------------------------------------------------------- images
@dataclass(frozen=True)
class ImageLimits:
    """What an API accepts.

    Attributes:
        max_bytes: largest encoded file (None: no limit).
        min_side: smallest width/height in pixels.
        max_side: largest width/height (None: no limit).
        formats: accepted Pillow format names.
    """

    max_bytes: int | None = None
    min_side: int = 1
    max_side: int | None = None
    formats: tuple[str, ...] = ("PNG", "JPEG")


_MIME = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
}


@dataclass(frozen=True)
class EncodedImage:
    """An image encoded for sending.

    Attributes:
        data: the file bytes.
        content_type: MIME type.
        sha256: hex digest of ``data`` (the cache key's image part).
        size: ``(height, width)`` as sent.
    """

    data: bytes = field(repr=False)
    content_type: str
    sha256: str
    size: tuple[int, int]


_UNCOMPRESSED = ("BMP", "TIFF")


def _check_format(image_format: str, limits: ImageLimits) -> str:
    fmt = str(image_format).upper().replace("JPG", "JPEG")
    if fmt not in limits.formats:
        raise ParameterError(
            f"image_format: {image_format!r} is not accepted by this API; use one of {list(limits.formats)}"
        )
    return fmt


def _encode(img: Image.Image, fmt: str, jpeg_quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=jpeg_quality)
    else:
        img.save(buf, format=fmt, compress_level=1) if fmt == "PNG" else img.save(buf, format=fmt)
    return buf.getvalue()


def encode_image(
    image: np.ndarray,
    limits: ImageLimits = ImageLimits(),
    image_format: str = "PNG",
    fit: bool = True,
    jpeg_quality: int = 95,
) -> EncodedImage:
    """Encode a uint8 ``(H, W, 3)`` image in memory, fitted to ``limits``.

    Too small images are enlarged and too large ones shrunk, keeping the
    aspect ratio (as seed 000 does); a file over ``max_bytes`` is re-encoded
    (an uncompressed one as PNG first, then as JPEG when allowed) and then shrunk until it fits.

    Args:
        image: the image.
        limits: what the API accepts.
        image_format: ``"PNG"`` (lossless, default) or another Pillow format in ``limits.formats``.
        fit: resize to fit; when False an image outside the limits raises.
        jpeg_quality: quality of JPEG encoding.

    Returns:
        The :class:`EncodedImage`.
    """
    fmt = _check_format(image_format, limits)
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ParameterError(f"images: expected uint8 (H, W, 3) RGB, got {arr.dtype} {arr.shape}")
    h, w = arr.shape[:2]
    scale = 1.0
    if min(h, w) < limits.min_side:
        scale = limits.min_side / min(h, w)
    if limits.max_side is not None and max(h, w) * scale > limits.max_side:
        scale = limits.max_side / max(h, w)
        if min(h, w) * scale < limits.min_side:
            raise ParameterError(
                f"images: a {w}x{h} image cannot fit between {limits.min_side} and {limits.max_side} "
                f"pixels per side with its aspect ratio kept"
            )
    img = Image.fromarray(arr)
    if scale != 1.0:
        if not fit:
            raise ParameterError(
                f"images: {w}x{h} is outside the API's limits ({limits.min_side}.."
                f"{limits.max_side or 'any'} pixels per side); pass fit_images=True to resize"
            )
        rounding = math.ceil if scale > 1 else round
        size = (max(limits.min_side, int(rounding(w * scale))), max(limits.min_side, int(rounding(h * scale))))
        img = img.resize(size, Image.Resampling.BICUBIC)
    data = _encode(img, fmt, jpeg_quality)
    if limits.max_bytes is not None:
        while len(data) > limits.max_bytes:
            if not fit:
                raise ParameterError(f"images: encoded image is {len(data)} bytes, over the API's {limits.max_bytes}")
            if fmt in _UNCOMPRESSED and "PNG" in limits.formats:
                fmt = "PNG"  # still lossless, and far smaller
            elif fmt != "JPEG" and "JPEG" in limits.formats:
                fmt = "JPEG"
            else:
                shrink = math.sqrt(limits.max_bytes / len(data)) * 0.95
                size = (int(img.width * shrink), int(img.height * shrink))
                if min(size) < limits.min_side:
                    raise ParameterError(
                        f"images: cannot encode under {limits.max_bytes} bytes at >= {limits.min_side} px"
                    )
                img = img.resize(size, Image.Resampling.BICUBIC)
            data = _encode(img, fmt, jpeg_quality)
    return EncodedImage(
        data=data,
        content_type=_MIME.get(fmt, "application/octet-stream"),
        sha256=hashlib.sha256(data).hexdigest(),
        size=(img.height, img.width),
    )


# -------------------------------------------------------------------- stats
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


# --------------------------------------------------------------- the client
_Client = TypeVar("_Client", bound="RemoteClient")


class RemoteClient:
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
        if key is not None:
            raw_key: str | None = key
            source = "key="
        else:
            raw_key = os.environ.get(self.key_env) if self.key_env else None
            source = f"${self.key_env}"
        self._key: Secret | None = check_key(raw_key, source) if raw_key else None
        if self._key is None and self.key_required:
            where = f" or set the {self.key_env} environment variable" if self.key_env else ""
            raise AuthenticationError(f"key: {type(self).__name__} needs an API key; pass key=...{where}")
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

    def _validate(self, answer: Any) -> None:
        """Raise :class:`MalformedAnswer` unless ``answer`` is what ``_parse`` promises (retried, never cached)."""

    def _refuse(self, answer: Any) -> str | None:
        """Why a well-formed answer is refused for good (too large), or None; checked before caching."""
        return None

    # -- public API
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
        if len(todo) == 1:
            results[todo[0]] = self._fetch(todo[0], unique[todo[0]], prompt)
        elif todo:
            executor = self._pool()
            futures: dict[Future[Any], str] = {executor.submit(self._fetch, k, unique[k], prompt): k for k in todo}
            try:
                for future, k in futures.items():
                    results[k] = future.result()
            except BaseException:
                # stop what has not started; let requests in flight finish (and reach the cache)
                for future in futures:
                    future.cancel()
                wait(futures)
                raise
        return [results[k] for k in keys]

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
        """The answer of a cache row, or None for a missing row or one that is not an answer (fetched again)."""
        answer = value.get(self._answer_field) if isinstance(value, dict) else None
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

    def _pool(self) -> ThreadPoolExecutor:
        with self._sessions_lock:  # several images' explanations may ask at once (explain_caption)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="xai-bridge-caption")
                self._finalizer = weakref.finalize(self, self._executor.shutdown, wait=False, cancel_futures=True)
            return self._executor

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            from ._transport import PolicyAdapter

            session = requests.Session()
            session.max_redirects = 0  # the adapter refuses 3xx; this makes sure requests never follows one
            adapter = PolicyAdapter(
                type(self).__name__,
                self.retry,
                deadline=self.deadline,
                max_response_bytes=self.max_response_bytes,
                backoff=self._backoff,
                parse_retry_after=parse_retry_after,
                scrub=self._scrub,
                before_attempt=self._before_attempt,
                on_wait=self._on_wait,
            )
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _scrub(self, text: str) -> str:
        if self._key is not None and self._key.reveal():
            text = text.replace(self._key.reveal(), "***")
        return text

    def _backoff(self, attempt: int) -> float:
        with self._rng_lock:
            return self.retry.backoff_delay(attempt, self._rng)

    def _before_attempt(self) -> None:
        if self.limiter is not None:
            self.limiter.acquire()
        self.stats.add(requests=1)
        self._refresh_claim(0.0)

    def _on_wait(self, delay: float) -> None:
        self.stats.add(retries=1)
        self._refresh_claim(delay)

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

    def _exchange(self, key: str, pixels: np.ndarray, prompt: str | None = None) -> Any:
        """Send one image until it is answered; transport faults are retried by the session's adapter."""
        import requests

        from ._transport import TransportError

        image = encode_image(pixels, self.limits, self.image_format, self.fit_images)
        session = self._session()
        call = self._prepare(image, prompt)
        headers = dict(call.headers)
        if self._key is not None:
            headers.update(self._auth_headers(self._key.reveal()))
        name = type(self).__name__
        url = self._scrub(call.url)
        malformed = 0
        while True:
            try:
                response = session.post(
                    call.url,
                    params=call.params,
                    headers=headers,
                    data=call.data,
                    json=call.json,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except TransportError as exc:
                raise RemoteCaptionError(str(exc)) from None
            except requests.RequestException as exc:  # not a transport fault: e.g. a bad URL
                raise RemoteCaptionError(
                    f"{name}: {url}: {type(exc).__name__}: {self._scrub(str(exc))[:300]}"
                ) from None
            status = response.status_code
            if status in (401, 403):
                where = f" or ${self.key_env}" if self.key_env else ""
                raise AuthenticationError(
                    f"key: {name} at {url} refused the API key (HTTP {status}): "
                    f"{self._scrub(response.text)[:200]!r}; check key={where}"
                )
            if status >= 400:
                raise RemoteCaptionError(f"{name}: {url} answered HTTP {status}: {self._scrub(response.text)[:300]!r}")
            try:
                answer = self._parse(response.json())
                self._validate(answer)
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                malformed += 1
                what = self._scrub(str(exc))[:120] if isinstance(exc, MalformedAnswer) else type(exc).__name__
                if malformed > self.retry.max_malformed:
                    raise RemoteCaptionError(
                        f"{name}: {url} sent {malformed} malformed answers ({what}); "
                        f"last one: {self._scrub(response.text)[:200]!r}"
                    ) from None
                logger.warning("%s: malformed answer from %s (%s); retrying", name, url, what)
                self.stats.add(retries=1)
                time.sleep(self._backoff(malformed - 1))
                continue
            refused = self._refuse(answer)
            if refused is not None:
                raise RemoteCaptionError(f"{name}: {url} sent {refused}")
            if self.cache is not None:
                self.cache.set(key, {self._answer_field: answer})
            return answer


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
