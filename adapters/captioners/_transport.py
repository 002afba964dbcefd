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
  bytes (each arriving within the read timeout) cannot hold a call for long;
* **quick connects** -- a connect whose SYN a full listen queue dropped is
  tried again within tens of milliseconds instead of the kernel's 1 s;
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

import contextlib
import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

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


class _Deadline(Exception):
    pass


@dataclass
class _Attempt:
    """One attempt's deadline and the connection it uses (seen by the watchdog thread)."""

    deadline: float
    conn: Any = None
    reused: bool = False
    answered: bool = False
    done: bool = False
    expired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_current = threading.local()


def _track(conn: Any) -> Any:
    attempt = getattr(_current, "attempt", None)
    if attempt is not None:
        attempt.conn = conn
        attempt.reused = getattr(conn, "sock", None) is not None  # a kept-alive connection from the pool
    return conn


#: How soon a request on a kept-alive connection must fail, unanswered, to be taken for a stale connection.
_STALE_WITHIN = 0.1


class _StaleConnection(Exception):
    """A kept-alive connection the server had closed: the request got no answer at all (not an attempt)."""


class _QuickConnect:
    """A connect whose SYN goes unanswered is tried again after a short, doubling wait, not the kernel's 1 s.

    A server whose listen queue is full drops the SYN of a new connection
    (Python's stock ``ThreadingHTTPServer`` listens with a backlog of 5 and
    closes every connection, so a batch of concurrent requests overflows
    it); the kernel sends the SYN again only after 1 s. Here each try lasts
    four times the usual connect time to that host (at least 50 ms), doubling
    after each miss, all within the caller's connect timeout.
    """

    timeout: Any
    host: str
    port: int
    _times: dict[tuple[str, int], float] = {}  # noqa: RUF012  (smoothed connect seconds per host, shared)

    def _new_conn(self) -> Any:
        total = self.timeout
        if not isinstance(total, (int, float)) or total <= 0:
            return super()._new_conn()  # type: ignore[misc]
        host = (self.host, self.port)
        usual = self._times.get(host)
        wait = 0.1 if usual is None else max(0.05, 4.0 * usual)
        end = time.monotonic() + total
        try:
            while True:
                start = time.monotonic()
                self.timeout = min(wait, end - start)
                try:
                    sock = super()._new_conn()  # type: ignore[misc]
                except ConnectTimeoutError as exc:
                    # urllib3's NewConnectionError (refused, no such host) is a ConnectTimeoutError too: an answer,
                    # not a lost SYN, so it goes to the adapter at once (a name that does not resolve fails there)
                    if isinstance(exc, NewConnectionError) or time.monotonic() >= end - 1e-3:
                        raise
                    wait *= 2
                    continue
                took = time.monotonic() - start
                self._times[host] = took if usual is None else 0.8 * usual + 0.2 * took
                sock.settimeout(total)
                return sock
        finally:
            self.timeout = total


class _HTTPConnection(_QuickConnect, HTTPConnection):
    pass


class _HTTPSConnection(_QuickConnect, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _track(super()._get_conn(timeout))


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _track(super()._get_conn(timeout))


def _expire(attempt: _Attempt) -> bool:
    """Shut the attempt's socket down (a blocked read then returns at once); False: still connecting, look again."""
    with attempt.lock:
        if attempt.done:
            return True
        attempt.expired = True
        sock = getattr(attempt.conn, "sock", None)
    if sock is None:  # still connecting: the connect timeout bounds it
        return False
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    return True


class _Watchdog:
    """One daemon thread expiring the attempts that pass their deadline (a thread per attempt cost a start each)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, attempt: _Attempt) -> None:
        """Expire ``attempt`` at its deadline unless it is done by then."""
        with self._cond:
            heapq.heappush(self._heap, (attempt.deadline, next(self._count), attempt))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="xai-bridge-deadline", daemon=True)
                self._thread.start()
            if self._heap[0][2] is attempt:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:  # finished in time: forget it
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(30.0)
                    continue
                due, _, attempt = self._heap[0]
                now = time.monotonic()
                if due > now:
                    self._cond.wait(due - now)
                    continue
                heapq.heappop(self._heap)
            if not _expire(attempt):
                with self._cond:
                    heapq.heappush(self._heap, (time.monotonic() + 0.05, next(self._count), attempt))


_watchdog = _Watchdog()


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
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

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
            except (*_TRANSIENT, _Deadline) as exc:
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
        if isinstance(exc, _Deadline):
            return f"deadline: no complete answer within {self.deadline:g} s (the server sends too slowly)"
        return f"{type(exc).__name__}: {self._scrub(str(exc))[:200]}"

    def _attempt(self, request: requests.PreparedRequest, timeout: Any, kwargs: dict[str, Any]) -> requests.Response:
        """One request under the watchdog; the body is read (bounded) before returning."""
        started = time.monotonic()
        attempt = _Attempt(deadline=started + self.deadline)
        _current.attempt = attempt
        _watchdog.watch(attempt)
        try:
            response = super().send(request, stream=True, timeout=timeout, **kwargs)
            attempt.answered = True  # a status line arrived: a failure from here on is not a stale connection
            _current.attempt = None
            complete = False
            try:
                body, complete = self._read(response, attempt)
                if attempt.expired:  # the watchdog cut it: what arrived may look complete (e.g. no body)
                    raise _Deadline()
                response._content = body  # what requests' own .content does
                response._content_consumed = True
            finally:
                if not complete:  # unread bytes would be taken for the next answer on this connection
                    response.raw.close()
                response.close()
            return response
        except _TRANSIENT as exc:
            if attempt.expired:
                raise _Deadline() from None
            quick = time.monotonic() - started < _STALE_WITHIN
            if attempt.reused and not attempt.answered and quick and unanswered(exc):
                raise _StaleConnection() from exc
            raise
        finally:
            _current.attempt = None
            with attempt.lock:
                attempt.done = True

    def _read(self, response: requests.Response, attempt: _Attempt) -> tuple[bytes, bool]:
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
                raise _Deadline()
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
