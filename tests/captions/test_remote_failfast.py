"""Remote clients fail fast where retrying cannot help, and never keep a key a server echoes back.

Faults that retrying cannot fix -- a host name that does not resolve, a TLS
handshake with a plain-HTTP server, a 4xx other than 408/429 -- fail at the
first attempt in one short line naming the endpoint and the fix; the retry
budget stays for transient faults. A server echoing the key in its answers
gets it into no caption, tag, cache row or saved ``.npz``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("requests")

from caption_server import CaptionServer, rule_caption, rule_tags
from helpers import random_images
from xai_bridge.adapters.captioners import (
    AuthenticationError,
    AzureVision40Tagger,
    AzureVisionV31Captioner,
    DiskCache,
    RemoteCaptionError,
    RetryPolicy,
    WordMatchScorer,
)

import xai_bridge as xb

pytestmark = pytest.mark.timeout(60)

#: a retry budget that would take seconds if it were spent: failing fast must not touch it
SLOW_RETRY = RetryPolicy(max_retries=6, backoff=0.5, seed=0)


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``*.invalid`` fails to resolve locally (no resolver asked); other hosts resolve as usual."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if str(host).endswith(".invalid"):
            asked.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return asked


class _StatusHandler(BaseHTTPRequestHandler):
    """Answers every POST with the server's ``status`` and Azure's JSON error body."""

    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.hits += 1
        status = self.server.status
        body = json.dumps({"error": {"code": str(status), "message": f"fault {status}"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def status_server() -> Iterator[Any]:
    """A loopback server answering every request with ``.status`` (set by the test); ``.hits`` counts them."""
    httpd: Any = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    httpd.daemon_threads, httpd.status, httpd.hits = True, 400, 0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _one_line_naming(text: str, *parts: str) -> None:
    assert "\n" not in text and len(text) < 300, text
    for part in parts:
        assert part in text, text


def test_a_host_that_does_not_resolve_fails_at_the_first_attempt(no_dns: list[str]) -> None:
    with AzureVisionV31Captioner("http://nonexistent.invalid/", key="k-123", cache=None, retry=SLOW_RETRY) as cap:
        start = time.monotonic()
        with pytest.raises(RemoteCaptionError) as info:
            cap.caption(random_images((1, 64, 64, 3)))
        took = time.monotonic() - start
        assert cap.stats.snapshot()["requests"] == 1 and cap.stats.snapshot()["retries"] == 0
    assert took < 0.5  # seven retries with backoff took 47 s before
    assert no_dns == ["nonexistent.invalid"]  # asked once: not retried, not looped on inside the connect
    _one_line_naming(str(info.value), "cannot resolve the host 'nonexistent.invalid'", "check the endpoint URL")


def test_https_to_a_plain_http_server_fails_at_the_first_attempt() -> None:
    with CaptionServer() as srv:
        url = srv.url.replace("http://", "https://")
        with AzureVisionV31Captioner(url, key=srv.key, cache=None, retry=SLOW_RETRY) as cap:
            start = time.monotonic()
            with pytest.raises(RemoteCaptionError) as info:
                cap.caption(random_images((1, 64, 64, 3)))
            assert time.monotonic() - start < 1.0
            assert cap.stats.snapshot()["retries"] == 0
    _one_line_naming(str(info.value), "TLS handshake with https://127.0.0.1", "check the scheme")


@pytest.mark.parametrize(
    ("status", "fix"),
    [
        (400, "check the parameters"),
        (404, "check the endpoint URL"),
        (413, "fit_images=True"),
        (418, "check the request"),
    ],
)
def test_a_client_error_fails_at_once_with_the_servers_message_and_the_fix(
    status_server: Any, status: int, fix: str
) -> None:
    status_server.status = status
    with AzureVisionV31Captioner(status_server.url, key="k-123", cache=None, retry=SLOW_RETRY) as cap:
        start = time.monotonic()
        with pytest.raises(RemoteCaptionError) as info:
            cap.caption(random_images((1, 64, 64, 3)))
        assert time.monotonic() - start < 1.0
    assert status_server.hits == 1
    _one_line_naming(str(info.value), f"answered HTTP {status} ('fault {status}')", fix, "(not retried)")


def test_403_is_a_refused_key_at_once(status_server: Any) -> None:
    status_server.status = 403
    with AzureVisionV31Captioner(status_server.url, key="k-123", cache=None, retry=SLOW_RETRY) as cap:
        with pytest.raises(AuthenticationError, match=r"refused the API key \(HTTP 403: 'fault 403'\)") as info:
            cap.caption(random_images((1, 64, 64, 3)))
    assert status_server.hits == 1
    _one_line_naming(str(info.value), "check key=")


def test_transient_faults_still_spend_the_retry_budget() -> None:
    fast = RetryPolicy(max_retries=3, backoff=0.01, max_backoff=0.02, seed=0)
    with CaptionServer() as srv, AzureVisionV31Captioner(srv.url, key=srv.key, cache=None, retry=fast) as cap:
        srv.inject("503", "429", "500")
        image = random_images((1, 64, 64, 3))
        assert cap.caption(image) == [rule_caption(image[0])]
        assert srv.requests == 4 and cap.stats.snapshot()["retries"] == 3


def _all_bytes(folder: Any) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_an_echoed_key_is_scrubbed_from_captions_the_cache_and_saved_explanations(tmp_path: Any) -> None:
    with CaptionServer(rule=lambda im: f"{rule_caption(im)} {srv.key}") as srv:
        key = srv.key
        assert key is not None
        cache = DiskCache(tmp_path / "cache" / "captions.sqlite")
        with AzureVisionV31Captioner(srv.url, key=key, cache=cache, retry=SLOW_RETRY) as cap:
            image = random_images((1, 64, 64, 3), seed=3)
            [caption] = cap.caption(image)
            assert caption == f"{rule_caption(image[0])} ***"
            [exp] = xb.explain_caption(
                cap, image, "builtin.Occlusion", scorer=WordMatchScorer(), window=32, stride=32, progress=False
            )
            assert exp.params["caption"].endswith("***")
            exp.save(tmp_path / "exp.npz")
            served = srv.requests
            assert cap.caption(image) == [caption] and srv.requests == served  # the scrubbed answer, from the cache
    assert key.encode() not in _all_bytes(tmp_path)
    with zipfile.ZipFile(tmp_path / "exp.npz") as npz:  # the .npz members, decompressed
        assert all(key.encode() not in npz.read(name) for name in npz.namelist())


def test_an_echoed_key_in_tag_names_is_scrubbed(tmp_path: Any) -> None:
    with CaptionServer(tag_rule=lambda im: {**rule_tags(im), f"tag {srv.key}": 0.9}) as srv:
        key = srv.key
        assert key is not None
        with AzureVision40Tagger(srv.url, key=key, cache=tmp_path / "tags.sqlite", retry=SLOW_RETRY) as tagger:
            [tags] = tagger.tag(random_images((1, 64, 64, 3)))
        assert "tag ***" in tags and not any(key in name for name in tags)
    assert key.encode() not in _all_bytes(tmp_path)


def test_a_row_stored_with_the_key_by_an_older_version_is_scrubbed_when_read(tmp_path: Any) -> None:
    with CaptionServer() as srv:
        key = srv.key
        assert key is not None
        image = random_images((1, 64, 64, 3), seed=5)
        with AzureVisionV31Captioner(srv.url, key=key, cache=tmp_path / "c.sqlite") as cap:
            cache = cap.cache
            assert cache is not None
            cache.set(cap._cache_key(image[0]), {"caption": f"old row {key}"})
            assert cap.caption(image) == ["old row ***"] and srv.requests == 0


def test_a_connection_dropped_mid_handshake_is_still_transient() -> None:
    import ssl

    import requests
    from xai_bridge.adapters.captioners._faults import permanent_fault

    dropped = requests.exceptions.SSLError(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    wrong = requests.exceptions.SSLError(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"))
    assert permanent_fault(dropped, "C", "https://h/x") is None
    assert "TLS handshake with https://h/x failed" in str(permanent_fault(wrong, "C", "https://h/x"))
    assert permanent_fault(requests.ConnectionError(ConnectionResetError(104, "reset")), "C", "https://h/x") is None
