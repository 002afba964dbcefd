"""Which connection faults another attempt can cure: the transport's judgement of an exception chain.

``requests`` wraps what went wrong several layers deep (a ``ConnectionError``
around urllib3's ``MaxRetryError`` around a ``NameResolutionError`` around
``socket.gaierror``); these helpers walk the chain once and say whether the
fault is permanent (fail at once, in one line naming the fix) or a kept-alive
connection the server closed before answering (sent again, not an attempt).
"""

from __future__ import annotations

import socket
import ssl

import requests
from urllib3.exceptions import NameResolutionError
from urllib3.exceptions import SSLError as _Urllib3SSLError

__all__ = ["permanent_fault", "unanswered"]


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps (arguments, causes, contexts, urllib3's ``reason``)."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 32:
        err = todo.pop()
        if any(err is s for s in seen):
            continue
        seen.append(err)
        todo += [a for a in err.args if isinstance(a, BaseException)]
        todo += [
            e for e in (err.__cause__, err.__context__, getattr(err, "reason", None)) if isinstance(e, BaseException)
        ]
    return seen


def permanent_fault(exc: BaseException, name: str, url: str) -> str | None:
    """The one-line message of a connection fault that retrying cannot fix, or None for a transient one.

    A host name that does not resolve (DNS answers the same a second later)
    and a failed TLS handshake (a plain-HTTP server behind ``https://``, a
    certificate the client does not trust) fail at once.
    """
    causes = _causes(exc)
    handshake = [e for e in causes if isinstance(e, ssl.SSLError)]
    if handshake and all(isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) for e in handshake):
        return None  # the connection dropped mid-handshake: transient, like a reset
    for err in causes:
        if isinstance(err, (NameResolutionError, socket.gaierror)):
            host = url.split("://", 1)[-1].split("/", 1)[0]
            return (
                f"{name}: cannot resolve the host {host!r} of {url} (DNS); check the endpoint URL's spelling and "
                "your network or proxy settings (not retried)"
            )
        if isinstance(err, (ssl.SSLError, _Urllib3SSLError, requests.exceptions.SSLError)):
            reasons = (getattr(e, "reason", None) for e in handshake)
            detail = next((r for r in reasons if r), type(err).__name__)
            return (
                f"{name}: the TLS handshake with {url} failed ({str(detail)[:60]}); check the scheme (https:// on "
                "a plain-HTTP server?), the certificate, or REQUESTS_CA_BUNDLE (not retried)"
            )
    return None


def unanswered(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the server closed the connection before answering anything."""
    import http.client

    seen: list[BaseException] = [exc]
    while seen:
        err = seen.pop()
        if isinstance(err, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
            return True
        seen += [a for a in err.args if isinstance(a, BaseException)]
        seen += [e for e in (err.__cause__, err.__context__) if e is not None]
    return False
