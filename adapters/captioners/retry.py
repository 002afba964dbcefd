"""When a remote call is tried again and how fast calls go out: the retry policy and the rate limiter.

:class:`RetryPolicy` is mounted on every session by the transport
(``_transport.py``), as urllib3's ``Retry`` is with
``HTTPAdapter(max_retries=Retry(...))``; it also answers to urllib3's names
(``total``, ``backoff_factor``, ``status_forcelist``, ...).
:class:`RateLimiter` is the optional client-side token bucket.
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from xai_bridge.errors import ParameterError

__all__ = ["RateLimiter", "RetryPolicy", "parse_retry_after"]


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

    def is_retry(self, status: int) -> bool:
        """Whether an answer with this HTTP status is tried again (urllib3's ``Retry.is_retry``)."""
        return int(status) in self.retry_statuses

    # urllib3's ``Retry`` names for the same settings, for readers who know that shape
    @property
    def total(self) -> int:
        """``max_retries``."""
        return self.max_retries

    @property
    def backoff_factor(self) -> float:
        """``backoff``."""
        return self.backoff

    @property
    def backoff_max(self) -> float:
        """``max_backoff``."""
        return self.max_backoff

    @property
    def backoff_jitter(self) -> float:
        """``jitter`` (relative here: the backoff times ``1 + jitter * U[0, 1)``)."""
        return self.jitter

    @property
    def status_forcelist(self) -> frozenset[int]:
        """``retry_statuses``."""
        return frozenset(self.retry_statuses)

    @property
    def respect_retry_after_header(self) -> bool:
        """Always True: ``Retry-After`` (and ``retry-after-ms``) is honoured up to ``max_retry_after``."""
        return True


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
