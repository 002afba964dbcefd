"""The connections and pools the transport mounts: quick connects, and each connection tracked for the deadline.

urllib3's pools, with two changes: a new connection whose SYN goes unanswered
is tried again within tens of milliseconds instead of the kernel's 1 s
(:class:`_QuickConnect`), and every connection handed out is recorded on the
attempt in flight (:func:`~xai_bridge.adapters.captioners._deadline.track`),
so the deadline watchdog can shut its socket down.
"""

from __future__ import annotations

import time
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from ._deadline import track

__all__ = ["HTTPPool", "HTTPSPool"]


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


class HTTPPool(HTTPConnectionPool):
    """urllib3's HTTP pool with quick connects, each connection it hands out tracked for the deadline."""

    ConnectionCls = _HTTPConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return track(super()._get_conn(timeout))


class HTTPSPool(HTTPSConnectionPool):
    """urllib3's HTTPS pool with quick connects, each connection it hands out tracked for the deadline."""

    ConnectionCls = _HTTPSConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return track(super()._get_conn(timeout))
