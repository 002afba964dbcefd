"""The transport policy mounted on every remote captioner's ``requests.Session``.

:class:`PolicyAdapter` is a ``requests`` ``HTTPAdapter`` that applies one
:class:`~xai_bridge.adapters.captioners.retry.RetryPolicy` to each API call,
in the style of urllib3's ``HTTPAdapter(max_retries=Retry(...))``, and adds
what urllib3's ``Retry`` cannot do because it stops at the headers:

* **no redirects** -- a 3xx answer is an error naming the status and the
  ``Location``; it is never followed (a custom key header such as
  ``Ocp-Apim-Subscription-Key`` would go to the other host, and a 302 would
  turn the POST into a GET whose foreign answer would be cached);
* **bounded bodies** -- the answer is streamed and refused past
  ``max_response_bytes`` (decoded bytes, so a gzip bomb stops too); a body
  that is too large is not retried, so no retry downloads it again;
* **a total deadline per attempt** -- a watchdog (one thread for every
  client) shuts the socket down when an attempt has run ``deadline`` seconds, so a server trickling headers or body
  bytes (each arriving within the read timeout) cannot hold a call for long (``_deadline.py``);
* **quick connects** -- a connect whose SYN a full listen queue dropped is
  tried again within tens of milliseconds instead of the kernel's 1 s (``_connections.py``);
* **body faults are transport faults** -- a connection reset mid-body, a body
  shorter than its ``Content-Length``, a bad gzip stream and a passed deadline
  are retried like timeouts, then raise one ``RemoteCaptionError``;
* **fail fast where retrying cannot help** -- a host name that does not
  resolve and a failed TLS handshake (wrong scheme, bad certificate) raise at
  the first attempt, in one line naming the endpoint and the fix; the retry
  budget stays for transient faults.

This module imports ``requests``; ``client.py`` imports it only when a session
is first needed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter

from ._connections import HTTPPool, HTTPSPool
from ._deadline import Attempt, DeadlinePassed, current, watchdog
from ._faults import permanent_fault, unanswered

if TYPE_CHECKING:  # pragma: no cover
    from .retry import RetryPolicy

__all__ = ["PolicyAdapter", "TransportError"]

logger = logging.getLogger("xai_bridge.remote")

#: bytes of an error answer kept for the message (the rest is not downloaded)
ERROR_SNIPPET_BYTES = 4096
_CHUNK = 64 * 1024
#: faults of the connection or the body that are worth another attempt
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class TransportError(Exception):
    """Raised by the adapter with a message that is already scrubbed of the key.

    ``client.py`` turns it into :class:`~xai_bridge.adapters.captioners.keys.RemoteCaptionError`;
    it exists so that this module need not import ``client.py``.
    """


#: How soon a request on a kept-alive connection must fail, unanswered, to be taken for a stale connection.
_STALE_WITHIN = 0.1


class _StaleConnection(Exception):
    """A kept-alive connection the server had closed: the request got no answer at all (not an attempt)."""


class PolicyAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` sending each request under a retry policy, a byte cap and a deadline.

    Args:
        name: who is calling, for messages (e.g. ``"AzureVisionV31Captioner"``).
        retry: when and how long to retry.
        deadline: most seconds one attempt may take, headers and body included.
        max_response_bytes: largest (decoded) answer body accepted.
        backoff: ``backoff(n)`` -> seconds before retry ``n + 1`` without ``Retry-After``.
        parse_retry_after: reads a ``Retry-After`` delay from response headers.
        scrub: removes the key from any text before it reaches a message or a log line.
        before_attempt: called before each attempt (rate limit, counters).
        on_wait: called with the delay before each retry's sleep (counters, claim refresh).
        sleep: the sleep function (injectable for tests).

    Example::

        session.mount("https://", PolicyAdapter("MyCaptioner", RetryPolicy(), deadline=65.0, max_response_bytes=1 << 20))
    """

    def __init__(
        self,
        name: str,
        retry: RetryPolicy,
        *,
        deadline: float,
        max_response_bytes: int,
        backoff: Callable[[int], float],
        parse_retry_after: Callable[[Mapping[str, str]], float | None],
        scrub: Callable[[str], str] = str,
        before_attempt: Callable[[], None] = lambda: None,
        on_wait: Callable[[float], None] = lambda delay: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.retry = retry
        self.deadline = float(deadline)
        self.max_response_bytes = int(max_response_bytes)
        self._backoff = backoff
        self._parse_retry_after = parse_retry_after
        self._scrub = scrub
        self._before_attempt = before_attempt
        self._on_wait = on_wait
        self._sleep = sleep
        super().__init__(pool_connections=1, pool_maxsize=2, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        """Pools whose connections the deadline watchdog can reach."""
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": HTTPPool, "https": HTTPSPool}

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, **kwargs: Any
    ) -> requests.Response:
        """Send ``request`` until it is answered, retrying transient faults; the body is read here.

        Returns:
            The response, its body already read (``response.content``); statuses
            other than 3xx and the retried ones are returned for the caller to judge.

        Raises:
            TransportError: a redirect, a body over the cap, or the last of the
                allowed attempts failed.
        """
        url = self._scrub(str(request.url).split("?", 1)[0])
        transient = 0
        stale = False
        while True:
            self._before_attempt()
            start = time.monotonic()
            retry_after: float | None = None
            try:
                response = self._attempt(request, timeout, kwargs)
            except _StaleConnection:
                # The pool handed out a kept-alive connection the server had just closed (its close raced the
                # reuse): the request was never answered, so it goes again at once on a new connection, once,
                # without spending the retry budget (what browsers and curl do).
                logger.debug("POST %s: kept-alive connection closed by the server; sending again", url)
                if not stale:
                    stale = True
                    continue
                reason = "the server closed the connection without answering"
            except (*_TRANSIENT, DeadlinePassed) as exc:
                permanent = permanent_fault(exc, self.name, url)
                if permanent is not None:
                    raise TransportError(permanent) from None
                reason = self._reason(exc)
                logger.debug("POST %s failed after %.3f s: %s", url, time.monotonic() - start, reason)
            else:
                status = response.status_code
                logger.debug("POST %s -> HTTP %d in %.3f s", url, status, time.monotonic() - start)
                if not self.retry.is_retry(status):
                    return response
                retry_after = self._parse_retry_after(response.headers)
                reason = f"HTTP {status}"
            if transient >= self.retry.max_retries:
                raise TransportError(f"{self.name}: {url} failed after {transient + 1} attempts; last: {reason}")
            if retry_after is not None and retry_after > self.retry.max_retry_after:
                raise TransportError(
                    f"{self.name}: {url} asked to wait {retry_after:.0f} s (Retry-After), more than "
                    f"retry.max_retry_after={self.retry.max_retry_after:.0f} s; try later or raise the limit"
                )
            delay = retry_after if retry_after is not None else self._backoff(transient)
            transient += 1
            logger.debug("%s: %s; retry %d in %.3f s", self.name, reason, transient, delay)
            self._on_wait(delay)
            self._sleep(delay)

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, DeadlinePassed):
            return f"deadline: no complete answer within {self.deadline:g} s (the server sends too slowly)"
        return f"{type(exc).__name__}: {self._scrub(str(exc))[:200]}"

    def _attempt(self, request: requests.PreparedRequest, timeout: Any, kwargs: dict[str, Any]) -> requests.Response:
        """One request under the watchdog; the body is read (bounded) before returning."""
        started = time.monotonic()
        attempt = Attempt(deadline=started + self.deadline)
        current.attempt = attempt
        watchdog.watch(attempt)
        try:
            response = super().send(request, stream=True, timeout=timeout, **kwargs)
            attempt.answered = True  # a status line arrived: a failure from here on is not a stale connection
            current.attempt = None
            complete = False
            try:
                body, complete = self._read(response, attempt)
                if attempt.expired:  # the watchdog cut it: what arrived may look complete (e.g. no body)
                    raise DeadlinePassed()
                response._content = body  # what requests' own .content does
                response._content_consumed = True
            finally:
                if not complete:  # unread bytes would be taken for the next answer on this connection
                    response.raw.close()
                response.close()
            return response
        except _TRANSIENT as exc:
            if attempt.expired:
                raise DeadlinePassed() from None
            quick = time.monotonic() - started < _STALE_WITHIN
            if attempt.reused and not attempt.answered and quick and unanswered(exc):
                raise _StaleConnection() from exc
            raise
        finally:
            current.attempt = None
            with attempt.lock:
                attempt.done = True

    def _read(self, response: requests.Response, attempt: Attempt) -> tuple[bytes, bool]:
        """The body (bounded) and whether it was read to its end."""
        status = response.status_code
        url = self._scrub(str(response.url).split("?", 1)[0])
        if 300 <= status < 400:
            location = self._scrub(response.headers.get("Location", "(none)"))[:300]
            raise TransportError(
                f"{self.name}: {url} answered HTTP {status} redirecting to {location!r}; API calls follow no "
                "redirect (the key would be sent there); pass the final endpoint URL instead"
            )
        limit = self.max_response_bytes if status < 300 else min(self.max_response_bytes, ERROR_SNIPPET_BYTES)
        declared = response.headers.get("Content-Length", "")
        if status < 300 and declared.isdigit() and int(declared) > limit:
            raise self._too_large(url, f"declares {int(declared)} bytes")
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_content(_CHUNK):
            total += len(chunk)
            if attempt.expired or time.monotonic() > attempt.deadline:
                attempt.expired = True
                raise DeadlinePassed()
            if total > limit:
                if status >= 300:  # an error answer: its start is enough for the message
                    chunks.append(chunk[: limit - (total - len(chunk))])
                    return b"".join(chunks), False
                raise self._too_large(url, f"sent more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks), True

    def _too_large(self, url: str, what: str) -> TransportError:
        return TransportError(
            f"{self.name}: {url} {what}, over max_response_bytes={self.max_response_bytes} (a caption answer "
            "is a few KB); check the endpoint URL, or raise max_response_bytes"
        )
