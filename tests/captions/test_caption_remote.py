"""Remote captioners against the loopback server: protocols, faults, retries, cache, rate limit, keys."""

from __future__ import annotations

import json
import logging
import pickle
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import numpy as np
import pytest

pytest.importorskip("requests")

from caption_server import CaptionServer, rule_caption
from helpers import random_images
from xai_bridge.adapters.captioners import (
    AZURE_V31_LIMITS,
    AuthenticationError,
    AzureVision40Captioner,
    AzureVisionV31Captioner,
    HFInferenceCaptioner,
    ImageLimits,
    OpenAICaptioner,
    RateLimiter,
    RemoteCaptionError,
    RetryPolicy,
    Secret,
    encode_image,
    parse_retry_after,
)
from xai_bridge.adapters.captioners.cache import DiskCache

pytestmark = pytest.mark.timeout(60)

FAST_RETRY = RetryPolicy(backoff=0.01, max_backoff=0.05, seed=0)
TIMEOUT = (2.0, 0.5)  # connect, read: a "timeout" fault hangs 1 s


@pytest.fixture
def server():
    with CaptionServer(hang=1.0) as srv:
        yield srv


@pytest.fixture
def images() -> np.ndarray:
    """24 distinct seeded 64x64 images."""
    return random_images((24, 64, 64, 3), seed=1)


def make(kind: str, srv: CaptionServer, **kwargs):
    kwargs = {"key": srv.key, "cache": None, "retry": FAST_RETRY, "timeout": TIMEOUT, **kwargs}
    if kind == "azure31":
        return AzureVisionV31Captioner(srv.url, **kwargs)
    if kind == "azure40":
        return AzureVision40Captioner(srv.url, **kwargs)
    if kind == "openai":
        return OpenAICaptioner(srv.url + "/v1", "loopback-vlm", **kwargs)
    return HFInferenceCaptioner("org/loopback-blip", base_url=srv.url + "/models", **kwargs)


@pytest.mark.parametrize("kind", ["azure31", "azure40", "openai", "hf"])
def test_each_protocol_returns_the_servers_captions(kind, server, images):
    with make(kind, server) as cap:
        assert cap.caption(images[:6]) == [rule_caption(im) for im in images[:6]]
        assert cap.stats.snapshot() == {"requests": 6, "retries": 0, "cache_hits": 0, "deduplicated": 0, "captions": 6}
    expected_path = {
        "azure31": "/vision/v3.1/analyze",
        "azure40": "/computervision/imageanalysis:analyze",
        "openai": "/v1/chat/completions",
        "hf": "/models/org/loopback-blip",
    }[kind]
    assert server.paths == {expected_path: 6}
    assert sorted(server.answered.values()) == [1] * 6


def test_faults_are_survived_and_every_image_is_answered_exactly_once(server, images):
    faults = ["429", "500", "503", "timeout", "malformed", "429:0.05", "500", "timeout"]
    server.inject(*faults)
    with make("azure31", server, max_concurrency=8) as cap:
        captions = cap.caption(images)
        stats = cap.stats.snapshot()
    assert captions == [rule_caption(im) for im in images]
    assert server.requests == len(images) + len(faults)
    assert sum(server.faults_served.values()) == len(faults)
    assert len(server.answered) == len(images) and set(server.answered.values()) == {1}
    assert stats["requests"] == server.requests and stats["retries"] == len(faults)


def test_identical_images_in_a_batch_are_sent_once(server, images):
    batch = np.concatenate([images[:3], images[:3], images[1:2]])
    with make("azure40", server) as cap:
        assert cap.caption(batch) == [rule_caption(im) for im in batch]
        assert cap.stats.deduplicated == 4
    assert server.requests == 3


def test_retry_after_seconds_is_honoured(server, images):
    server.inject("429:0.6")
    with make("openai", server, retry=RetryPolicy(backoff=0.0, jitter=0.0)) as cap:
        start = time.monotonic()
        cap.caption(images[:1])
        elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 3.0
    assert server.requests == 2


def test_parse_retry_after_forms():
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"Retry-After": "-3"}) == 0.0
    assert parse_retry_after({"Retry-After": format_datetime(now + timedelta(seconds=30), usegmt=True)}, now) == 30.0
    assert parse_retry_after({"Retry-After": format_datetime(now - timedelta(seconds=30), usegmt=True)}, now) == 0.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert parse_retry_after({"x-ms-retry-after-ms": "1000"}) == 1.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_is_exponential_capped_and_seeded():
    import random

    policy = RetryPolicy(backoff=0.5, max_backoff=4.0, jitter=0.25, seed=3)
    a = [policy.backoff_delay(k, random.Random(3)) for k in range(6)]
    b = [policy.backoff_delay(k, random.Random(3)) for k in range(6)]
    assert a == b
    u = random.Random(3).random()
    assert a[:4] == pytest.approx([0.5 * 2**k * (1 + 0.25 * u) for k in range(4)])
    assert a[5] == pytest.approx(4.0 * (1 + 0.25 * u))
    with pytest.raises(ValueError, match="retry"):
        RetryPolicy(max_retries=-1)


def test_gives_up_after_max_retries(server, images):
    server.inject("500", "500", "500", "500")
    with make("azure31", server, retry=RetryPolicy(max_retries=2, backoff=0.0)) as cap:
        with pytest.raises(RemoteCaptionError, match="after 3 attempts; last: HTTP 500"):
            cap.caption(images[:1])
    assert server.requests == 3


def test_retry_after_beyond_the_limit_fails_clearly(server, images):
    server.inject("429:3600")
    with make("azure31", server) as cap, pytest.raises(RemoteCaptionError, match="Retry-After"):
        cap.caption(images[:1])
    assert server.requests == 1


def test_malformed_json_is_retried_a_bounded_number_of_times(server, images):
    server.inject("malformed", "malformed", "malformed")
    with make("azure31", server, retry=RetryPolicy(max_malformed=2, backoff=0.0)) as cap:
        with pytest.raises(RemoteCaptionError, match="3 malformed answers"):
            cap.caption(images[:1])
    assert server.requests == 3
    server.inject("malformed")
    with make("azure31", server, retry=RetryPolicy(max_malformed=2, backoff=0.0)) as cap:
        assert cap.caption(images[:1]) == [rule_caption(images[0])]


def test_401_fails_at_once_and_never_shows_the_key(server, images):
    server.inject("401")  # the server echoes the (correct) key in its error message
    with make("azure31", server) as cap, pytest.raises(AuthenticationError) as info:
        cap.caption(images[:1])
    assert server.requests == 1  # no retry
    assert server.key not in str(info.value) and "***" in str(info.value) and "HTTP 401" in str(info.value)
    with make("openai", server, key="wrong-key-abc") as cap, pytest.raises(AuthenticationError, match="key"):
        cap.caption(images[:1])


def test_other_client_errors_fail_at_once(server, images):
    with make("openai", server, max_concurrency=2) as cap:
        cap.url = server.url + "/v1/nowhere"
        with pytest.raises(RemoteCaptionError, match="HTTP 404"):
            cap.caption(images[:1])
    assert server.requests == 1


def test_key_from_environment_and_missing_key(server, images, monkeypatch):
    monkeypatch.delenv("AZURE_VISION_KEY", raising=False)
    with pytest.raises(AuthenticationError, match="AZURE_VISION_KEY"):
        AzureVisionV31Captioner(server.url, cache=None)
    monkeypatch.setenv("MY_VISION_KEY", server.key)
    with AzureVisionV31Captioner(server.url, key_env="MY_VISION_KEY", cache=None) as cap:
        assert cap.caption(images[:1]) == [rule_caption(images[0])]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with CaptionServer(key=None) as open_server:  # local servers (vLLM, Ollama) need no key
        with OpenAICaptioner(open_server.url + "/v1", "m", cache=None) as cap:
            assert cap.caption(images[:1]) == [rule_caption(images[0])]


def test_key_never_in_logs_reprs_or_cache(server, images, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    server.inject("429", "malformed", "timeout", "500")
    cache_path = tmp_path / "captions.sqlite"
    cap = make("azure31", server, cache=cache_path)
    with cap:
        cap.caption(images[:8])
        assert server.key not in repr(cap) and "'***'" in repr(cap)
        assert server.key not in str(cap.describe())
        with pytest.raises(TypeError):
            pickle.dumps(cap)
    server.inject("401")
    with make("azure31", server, cache=cache_path) as cap2, pytest.raises(AuthenticationError):
        cap2.caption(images[8:9])
    assert "malformed answer" in caplog.text and "HTTP 429" in caplog.text  # it did log
    assert server.key not in caplog.text
    for path in tmp_path.iterdir():  # the sqlite file and any WAL/SHM side files
        assert server.key.encode() not in path.read_bytes()
    secret = Secret(server.key)
    assert server.key not in repr(secret) + str(secret) + f"{secret}"


def test_cache_rerun_makes_zero_requests(server, images, tmp_path):
    path = tmp_path / "c.sqlite"
    with make("azure31", server, cache=path) as cap:
        first = cap.caption(images[:10])
    assert server.requests == 10
    with make("azure31", server, cache=path) as cap:
        assert cap.caption(images[:10]) == first
        assert cap.stats.cache_hits == 10 and cap.stats.requests == 0
    assert server.requests == 10
    # a different endpoint parameter is a different cache entry
    with make("azure31", server, cache=path, language="es") as cap:
        cap.caption(images[:2])
    assert server.requests == 12
    assert len(DiskCache(path)) == 12


def test_a_crashed_run_never_pays_twice(server, images, tmp_path):
    path = tmp_path / "c.sqlite"
    server.inject("500")
    with make("azure31", server, cache=path, retry=RetryPolicy(max_retries=0), max_concurrency=4) as cap:
        with pytest.raises(RemoteCaptionError):
            cap.caption(images[:12])
    assert sum(server.answered.values()) <= 11  # the failed image, at least, was not answered
    with make("azure31", server, cache=path) as cap:
        assert cap.caption(images[:12]) == [rule_caption(im) for im in images[:12]]
    assert len(server.answered) == 12 and set(server.answered.values()) == {1}


def test_rate_limiter_token_bucket_with_a_fake_clock():
    now = [0.0]
    slept: list[float] = []
    limiter = RateLimiter(10.0, burst=2, clock=lambda: now[0], sleep=slept.append)
    waits = [limiter.acquire() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])
    assert slept == pytest.approx([0.1, 0.2, 0.3])
    now[0] = 10.0  # long idle: the bucket refills to `burst` only
    assert [limiter.acquire() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.1])
    with pytest.raises(ValueError, match="rate_limit"):
        RateLimiter(0)


def test_rate_limit_spaces_concurrent_requests(server, images):
    with make("hf", server, rate_limit=20.0, max_concurrency=6) as cap:
        start = time.monotonic()
        cap.caption(images[:6])
        elapsed = time.monotonic() - start
    assert elapsed >= 5 / 20.0 - 0.01


def test_images_are_fitted_to_the_api_limits(server):
    small = np.full((20, 30, 3), 200, np.uint8)
    enc = encode_image(small, AZURE_V31_LIMITS)
    assert enc.size == (50, 75) and enc.content_type == "image/png"  # aspect ratio kept
    with pytest.raises(ValueError, match="fit_images"):
        encode_image(small, AZURE_V31_LIMITS, fit=False)
    with make("azure31", server) as cap:  # the server refuses < 50x50: the client enlarged it
        assert cap.caption(small[None]) == [rule_caption(small)]
    noise = random_images((200, 300, 3))
    limits = ImageLimits(max_bytes=30_000, min_side=10, formats=("PNG", "JPEG"))
    enc = encode_image(noise, limits)
    assert len(enc.data) <= 30_000 and enc.content_type == "image/jpeg"
    h, w = enc.size
    assert abs(w / h - 1.5) < 0.02
    enc = encode_image(noise, ImageLimits(max_side=100))
    assert enc.size == (67, 100)
    with pytest.raises(ValueError, match="image_format"):
        AzureVisionV31Captioner(server.url, key="k", cache=None, image_format="TIFF")


def test_empty_azure_description_gives_an_empty_caption(server):
    with make("azure31", server) as cap:
        assert cap._parse({"description": {"captions": []}}) == ""
        assert cap._parse({"description": {"captions": [{"text": " a cat "}]}}) == "a cat"


def test_answer_shapes_each_api_may_send(server):
    with make("openai", server) as cap:
        parts = {
            "choices": [
                {"message": {"content": [{"type": "text", "text": "a cat"}, {"type": "text", "text": "on a mat "}]}}
            ]
        }
        assert cap._parse(parts) == "a cat on a mat"
        with pytest.raises(TypeError):
            cap._parse({"choices": [{"message": {"content": None}}]})
        assert cap.describe()["params"]["model"] == "loopback-vlm"
    with make("hf", server) as cap:
        assert cap._parse({"generated_text": "a dog "}) == "a dog"
        assert cap._parse([{"generated_text": "a dog"}]) == "a dog"
    with make("azure40", server, gender_neutral_caption=True) as cap:
        assert cap.describe()["params"]["gender-neutral-caption"] == "true"
        assert cap._parse({"captionResult": {"text": "a person", "confidence": 0.5}}) == "a person"


def test_a_kept_alive_connection_the_server_closed_is_not_an_attempt(tmp_path):
    """A server that drops a kept-alive connection as the next request arrives (a keep-alive timeout racing the
    client's reuse) never answered it: the request goes again on a new connection, without spending retries."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = {"requests": 0, "dropped": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.count = getattr(self, "count", 0) + 1  # requests on this connection
            seen["requests"] += 1
            if self.count > 1:  # the second request on a connection: closed unanswered
                seen["dropped"] += 1
                self.close_connection = True
                return
            body = json.dumps({"description": {"captions": [{"text": "a cat", "confidence": 0.9}]}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        with AzureVisionV31Captioner(url, key="k" * 32, cache=None, retry=RetryPolicy(max_retries=0)) as cap:
            images = random_images((3, 16, 16, 3), seed=7)
            for i in range(3):  # one image at a time: each request after the first reuses the pooled connection
                assert cap.caption(images[i : i + 1]) == ["a cat"]
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen["dropped"] == 2 and seen["requests"] == 5  # two requests dropped and sent again, none failed
