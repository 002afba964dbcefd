"""A total deadline per attempt: a watchdog thread shuts down the socket of an attempt that runs past it.

A socket's read timeout bounds each wait for a byte, not the whole answer: a
server trickling headers or body bytes, each within the read timeout, could
hold a call for as long as it likes. Each attempt of
:class:`~xai_bridge.adapters.captioners._transport.PolicyAdapter` is an
:class:`Attempt` with a deadline; the connection pools record its connection
(:func:`track`), and one daemon thread shared by every client (:data:`watchdog`)
shuts that connection's socket down when the deadline passes, so the blocked
read returns at once and the adapter raises :class:`DeadlinePassed`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Attempt", "DeadlinePassed", "current", "track", "watchdog"]


class DeadlinePassed(Exception):
    """An attempt ran past its deadline (the watchdog cut its socket, or the body came in too slowly)."""


@dataclass
class Attempt:
    """One attempt's deadline and the connection it uses (seen by the watchdog thread)."""

    deadline: float
    conn: Any = None
    reused: bool = False
    answered: bool = False
    done: bool = False
    expired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


#: the attempt the calling thread is making, if any (``current.attempt``): where :func:`track` records the connection
current = threading.local()


def track(conn: Any) -> Any:
    """Record ``conn`` as the connection of this thread's attempt, so the watchdog can reach its socket."""
    attempt = getattr(current, "attempt", None)
    if attempt is not None:
        attempt.conn = conn
        attempt.reused = getattr(conn, "sock", None) is not None  # a kept-alive connection from the pool
    return conn


def _expire(attempt: Attempt) -> bool:
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
        self._heap: list[tuple[float, int, Attempt]] = []
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, attempt: Attempt) -> None:
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


watchdog = _Watchdog()
