"""Remote captioners under hostile answers, transport faults, damaged caches and a shared cache (issue 18).

Every server is the loopback CaptionServer on 127.0.0.1; every loop it runs is bounded by what it sends.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("requests")

from caption_server import CaptionServer, rule_caption
from helpers import REPO, random_images
from xai_bridge.adapters.captioners import (
    AzureVision40Captioner,
    AzureVisionV31Captioner,
    FunctionCaptioner,
    HFInferenceCaptioner,
    OpenAICaptioner,
    RemoteCaptionError,
    RetryPolicy,
    WordMatchScorer,
)
from xai_bridge.adapters.captioners.cache import CacheError, DiskCache
from xai_bridge.adapters.captioners.http import InvalidKeyError

import xai_bridge as xb

pytestmark = pytest.mark.timeout(60)

FAST = RetryPolicy(backoff=0.01, max_backoff=0.05, seed=0)
TIMEOUT = (2.0, 1.0)
ROOT = REPO


@pytest.fixture
def server():
    with CaptionServer(hang=1.0, trickle_interval=0.1) as srv:
        yield srv


@pytest.fixture
def images() -> np.ndarray:
    return random_images((6, 64, 64, 3), seed=7)


def make(kind: str, srv: CaptionServer, **kwargs):
    kwargs = {"key": srv.key, "cache": None, "retry": FAST, "timeout": TIMEOUT, **kwargs}
    if kind == "azure31":
        return AzureVisionV31Captioner(srv.url, **kwargs)
    if kind == "azure40":
        return AzureVision40Captioner(srv.url, **kwargs)
    if kind == "openai":
        return OpenAICaptioner(srv.url + "/v1", "loopback-vlm", **kwargs)
    return HFInferenceCaptioner("org/loopback-blip", base_url=srv.url + "/models", **kwargs)


def exception_text(exc: BaseException) -> str:
    """Everything an exception shows: message, repr and the printed traceback (with its causes)."""
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


# ------------------------------------------------------------------ security: redirects
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_refused_and_nothing_is_cached(server, images, tmp_path, status):
    with CaptionServer(key=None) as foreign:
        target = foreign.url + "/vision/v3.1/analyze"
        server.inject(f"redirect:{status}:{target}")
        with make("azure31", server, cache=tmp_path / "c.sqlite") as cap:
            with pytest.raises(RemoteCaptionError, match=f"HTTP {status} redirecting to '{target}'") as info:
                cap.caption(images[:1])
            assert len(cap.cache) == 0
        assert foreign.requests == 0  # the key never went there
    assert server.requests == 1
    assert server.key not in exception_text(info.value)


def test_a_redirect_loop_costs_one_request(server, images):
    server.inject(*["redirect:302:"] * 40)
    with make("azure31", server) as cap, pytest.raises(RemoteCaptionError, match="HTTP 302"):
        cap.caption(images[:1])
    assert server.requests == 1


# ------------------------------------------------------------------ security: keys
@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        ("k3y-0123456789abcdef\n", "a line break"),
        ("k3y-0123456789abcdef\r\n", "a line break"),
        (" k3y-0123456789abcdef", "whitespace"),
        ("k3y-0123 456789abcdef", "whitespace"),
        ("k3y-0123456789abcdef\x00", "a control character"),
        ("k3y-0123456789abcdéf", "a non-ASCII character"),
    ],
)
def test_bad_keys_are_refused_up_front_without_showing_them(server, monkeypatch, bad, kind):
    with pytest.raises(InvalidKeyError, match=f"key: the API key from key= has {kind}") as info:
        AzureVisionV31Captioner(server.url, key=bad, cache=None)
    assert isinstance(info.value, xb.XaiBridgeError)
    raised = [info.value]
    if "\x00" not in bad:  # environment variables cannot hold a NUL
        monkeypatch.setenv("AZURE_VISION_KEY", bad)
        with pytest.raises(InvalidKeyError, match=r"from \$AZURE_VISION_KEY") as env_info:
            AzureVisionV31Captioner(server.url, cache=None)
        raised.append(env_info.value)
    for exc in raised:
        assert bad.strip() not in exception_text(exc) and "0123456789" not in exception_text(exc)
    assert server.requests == 0


FAULTS = ["401", "500", "malformed", "null", "reset", "short", "badgzip", "huge", "long-caption", "trickle"]


def test_the_key_is_in_no_exception_log_record_cache_row_saved_file_or_repr(server, images, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's included
    server.big_bytes = 200_000
    key = server.key
    texts: list[str] = []
    cache_path = tmp_path / "captions.sqlite"
    with make(
        "azure31",
        server,
        cache=cache_path,
        retry=RetryPolicy(max_retries=0, max_malformed=0, backoff=0.0),
        deadline=0.5,
        max_response_bytes=100_000,
        max_caption_chars=10_000,
    ) as cap:
        for i, fault in enumerate(FAULTS):
            server.inject(fault)
            with pytest.raises(xb.XaiBridgeError) as info:
                cap.caption(images[i % 6 : i % 6 + 1])
            texts.append(exception_text(info.value))
        server.inject(f"redirect:307:{server.url}/elsewhere")
        with pytest.raises(RemoteCaptionError) as info:
            cap.caption(images[:1])
        texts.append(exception_text(info.value))
        [exp] = xb.explain_caption(
            cap, images[0], "builtin.Occlusion", scorer=WordMatchScorer(), window=32, stride=32, baseline=0
        )
        texts += [repr(cap), json.dumps(cap.describe()), repr(cap.__dict__), json.dumps(exp.params, default=str)]
    saved = exp.save(tmp_path / "exp.npz")
    texts.append(json.dumps(xb.Explanation.load(saved).params, default=str))
    texts += [record.getMessage() for record in caplog.records]
    assert any("refused the API key" in t for t in texts)  # the server echoed the key in its 401 answer
    assert any("HTTP 500" in t for t in texts) and any("deadline" in t for t in texts)
    for text in texts:
        assert key not in text
    for path in tmp_path.iterdir():  # the sqlite file with its WAL/SHM files, the saved explanation
        assert key.encode() not in path.read_bytes()
    with sqlite3.connect(cache_path) as conn:
        assert not [r for r in conn.execute("SELECT * FROM entries") if key in repr(r)]


# ------------------------------------------------------------------ sizes
def test_a_huge_answer_is_refused_after_one_request_and_not_retried(server, images, tmp_path):
    server.big_bytes = 4 << 20
    server.inject("huge", "huge", "huge")
    with (
        make("azure31", server, cache=tmp_path / "c.sqlite", max_response_bytes=64 << 10) as cap,
        pytest.raises(RemoteCaptionError, match="over max_response_bytes=65536") as info,
    ):
        cap.caption(images[:1])
    assert server.requests == 1 and len(DiskCache(tmp_path / "c.sqlite")) == 0
    assert "declares 4194317 bytes" in str(info.value)


def test_a_huge_chunked_answer_stops_at_the_cap(server, images):
    server.big_bytes = 4 << 20  # no Content-Length: the cap is met while streaming
    server.inject("huge-chunked")
    with (
        make("azure31", server, max_response_bytes=64 << 10) as cap,
        pytest.raises(RemoteCaptionError, match="sent more than 65536 bytes, over max_response_bytes"),
    ):
        cap.caption(images[:1])
    assert server.requests == 1


def test_a_caption_over_max_caption_chars_is_refused_and_not_cached(server, images, tmp_path):
    server.big_bytes = 50_000
    server.inject("long-caption")
    with make("openai", server, cache=tmp_path / "c.sqlite") as cap:
        with pytest.raises(RemoteCaptionError, match=r"caption of 4999\d characters, over max_caption_chars=2000"):
            cap.caption(images[:1])
        assert len(cap.cache) == 0
        assert cap.caption(images[:1]) == [rule_caption(images[0])]  # the next answer is normal
    assert server.requests == 2


# ------------------------------------------------------------------ null captions and bad cache rows
@pytest.mark.parametrize("kind", ["azure31", "azure40", "openai", "hf"])
def test_a_null_caption_is_a_malformed_answer_never_none(kind, server, images, tmp_path):
    server.inject("null")
    with make(kind, server, cache=tmp_path / "c.sqlite") as cap:
        assert cap.caption(images[:1]) == [rule_caption(images[0])]  # retried
        assert cap.stats.snapshot()["retries"] == 1
        server.inject("null", "null", "null")
        with pytest.raises(RemoteCaptionError, match=r"3 malformed answers .* is null, not text"):
            cap.caption(images[1:2])
        rows = [json.loads(v) for (v,) in sqlite3.connect(cap.cache.path).execute("SELECT value FROM entries")]
    assert rows == [{"caption": rule_caption(images[0])}]


def test_bad_cache_rows_are_fetched_again_not_returned(server, images, tmp_path):
    path = tmp_path / "c.sqlite"
    with make("azure31", server, cache=path) as cap:
        keys = [cap._cache_key(im) for im in images[:4]]
    with sqlite3.connect(path) as conn:
        for k, value in zip(keys, ['{"caption": null}', "{not json", '{"text": "a"}', "[1, 2]"], strict=True):
            conn.execute("INSERT INTO entries VALUES (?, ?, 0)", (k, value))
    with make("azure31", server, cache=path) as cap:
        assert cap.caption(images[:4]) == [rule_caption(im) for im in images[:4]]
        assert cap.caption(images[:4]) == [rule_caption(im) for im in images[:4]]  # now from the cache
    assert server.requests == 4


def test_function_captioners_must_return_text():
    with pytest.raises(TypeError, match="returned NoneType for image 0; return the caption as a str"):
        FunctionCaptioner(lambda img: None).caption(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(TypeError, match="returned NoneType for image 0"):
        xb.explain_caption(lambda img: None, np.zeros((8, 8, 3), np.uint8), "rise", scorer=WordMatchScorer())


# ------------------------------------------------------------------ damaged cache files
def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not an sqlite file" * 100)


def _truncated(path: Path) -> None:
    with DiskCache(path) as cache:
        cache.set_many({f"k{i}": {"caption": "x" * 500} for i in range(400)})
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flipped(path: Path) -> None:
    with DiskCache(path) as cache:
        cache.set_many({f"k{i}": {"caption": "x" * 500} for i in range(400)})
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    for offset in range(4096 * 3, len(data), 4096):  # every page header after the first few
        data[offset : offset + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))


def _wrong_table(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE entries (a INTEGER)")


@pytest.mark.parametrize("damage", [_garbage, _truncated, _flipped, _wrong_table])
def test_a_damaged_cache_names_the_file_and_the_fix(server, images, tmp_path, damage):
    path = tmp_path / "c.sqlite"
    damage(path)
    with pytest.raises(CacheError, match=r"cache: .*c\.sqlite is damaged .* on_damage='rebuild'") as info:
        make("azure31", server, cache=path)
    assert isinstance(info.value, xb.XaiBridgeError) and not isinstance(info.value, sqlite3.Error)
    before = path.read_bytes()
    with DiskCache(path, on_damage="rebuild") as cache, make("azure31", server, cache=cache) as cap:
        assert cap.caption(images[:2]) == [rule_caption(im) for im in images[:2]]
        assert len(cache) == 2
    [aside] = [p for p in tmp_path.glob("c.sqlite.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
    assert aside.read_bytes() == before  # kept for whoever wants it back


class _BrokenConnection:
    """Stands for a connection whose next page read finds a damaged page."""

    def execute(self, *args):
        raise sqlite3.DatabaseError("database disk image is malformed")

    def close(self):
        pass


def test_damage_found_after_opening_raises_or_rebuilds(tmp_path):
    path = tmp_path / "c.sqlite"
    with DiskCache(path) as cache:
        cache.set("k", {"caption": "a cat"})
        cache._conn = _BrokenConnection()
        with pytest.raises(
            CacheError, match=r"c\.sqlite is damaged \(DatabaseError: database disk image is malformed\)"
        ):
            cache.get("k")
    with DiskCache(path, on_damage="rebuild") as cache:
        cache._conn = _BrokenConnection()
        assert cache.get("k") is None  # moved aside, the read ran again on an empty cache
        cache.set("k", {"caption": "a dog"})
        assert cache.get("k") == {"caption": "a dog"}
    assert len(list(tmp_path.glob("c.sqlite.damaged-*"))) >= 1


# ------------------------------------------------------------------ two callers sharing one cache
def test_two_captioners_sharing_a_cache_file_pay_once_per_image(images, tmp_path):
    path = tmp_path / "shared.sqlite"
    with CaptionServer(latency=0.2) as srv:
        results: dict[int, list[str]] = {}
        start = threading.Barrier(2)

        def run(i: int) -> None:
            with make("azure31", srv, cache=path, max_concurrency=6) as cap:
                start.wait(timeout=10)
                results[i] = cap.caption(images)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        expected = [rule_caption(im) for im in images]
        assert results == {0: expected, 1: expected}
        assert srv.requests == 6 and sorted(srv.answered.values()) == [1] * 6


def test_two_processes_sharing_a_cache_file_pay_once_per_image(images, tmp_path):
    path = tmp_path / "shared.sqlite"
    np.save(tmp_path / "images.npy", images)
    code = textwrap.dedent(
        """
        import json, sys, time
        from pathlib import Path
        import numpy as np
        from xai_bridge.adapters.captioners import AzureVisionV31Captioner, RetryPolicy
        url, key, folder, me = sys.argv[1:5]
        folder = Path(folder)
        images = np.load(folder / "images.npy")
        with AzureVisionV31Captioner(url, key=key, cache=folder / "shared.sqlite", retry=RetryPolicy(seed=0)) as cap:
            (folder / f"ready-{me}").touch()
            for _ in range(400):  # both start together: at most 20 s
                if (folder / "go").exists():
                    break
                time.sleep(0.05)
            (folder / f"out-{me}.json").write_text(json.dumps(cap.caption(images)))
        """
    )
    with CaptionServer(latency=0.3) as srv:
        procs = [
            subprocess.Popen([sys.executable, "-c", code, srv.url, srv.key, str(tmp_path), str(i)], cwd=ROOT)
            for i in range(2)
        ]
        try:
            for _ in range(400):
                if all((tmp_path / f"ready-{i}").exists() for i in range(2)) or any(p.poll() for p in procs):
                    break
                time.sleep(0.05)
            (tmp_path / "go").touch()
            assert [p.wait(timeout=40) for p in procs] == [0, 0]
        finally:
            for p in procs:
                p.kill()
        expected = [rule_caption(im) for im in images]
        for i in range(2):
            assert json.loads((tmp_path / f"out-{i}.json").read_text()) == expected
        assert srv.requests == 6 and sorted(srv.answered.values()) == [1] * 6
    assert len(DiskCache(path)) == 6


def test_a_claim_whose_owner_gave_up_or_died_is_taken_over(server, images, tmp_path):
    path = tmp_path / "c.sqlite"
    with make("azure31", server, cache=path) as cap:
        dead, alive = cap._cache_key(images[0]), cap._cache_key(images[1])
        other = DiskCache(path)
        assert other.claim(dead, "crashed-process", ttl=-1.0) == "mine"  # already expired
        assert other.claim(alive, "slow-process", ttl=30.0) == "mine"
        assert cap.cache.claim(alive, "me", ttl=30.0) == "busy"
        threading.Timer(0.3, other.release, (alive, "slow-process")).start()  # it failed: no answer stored
        assert cap.caption(images[:2]) == [rule_caption(im) for im in images[:2]]
        assert other.claim(alive, "slow-process", ttl=30.0) == "done"
    assert server.requests == 2


# ------------------------------------------------------------------ transport faults
@pytest.mark.parametrize("fault", ["reset", "short", "badgzip", "trickle", "trickle-headers", "timeout"])
def test_a_transport_fault_is_retried(server, images, fault):
    server.inject(fault)
    with make("azure31", server, deadline=1.0) as cap:
        assert cap.caption(images[:1]) == [rule_caption(images[0])]
        assert cap.stats.snapshot()["retries"] == 1
    assert server.requests == 2 and server.faults_served == {fault: 1}


@pytest.mark.parametrize(
    ("fault", "last"),
    [
        ("reset", "(ChunkedEncodingError|ConnectionError)"),
        ("short", "ChunkedEncodingError"),
        ("badgzip", "ContentDecodingError"),
        ("trickle", "deadline: no complete answer within 1 s"),
    ],
)
def test_a_transport_fault_that_persists_ends_in_one_clear_error(server, images, fault, last):
    server.inject(fault, fault, fault)
    with (
        make("azure31", server, deadline=1.0, retry=RetryPolicy(max_retries=2, backoff=0.0)) as cap,
        pytest.raises(RemoteCaptionError, match=f"failed after 3 attempts; last: {last}") as info,
    ):
        cap.caption(images[:1])
    assert server.requests == 3
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("fault", ["trickle", "trickle-headers"])
def test_the_deadline_ends_a_trickling_answer(server, images, fault):
    server.trickle_interval = 0.1  # the answer would take 15-20 s
    server.inject(fault)
    start = time.monotonic()
    with (
        make("azure31", server, timeout=(1, 2), retry=RetryPolicy(max_retries=0)) as cap,
        pytest.raises(RemoteCaptionError, match="deadline: no complete answer within 3 s"),
    ):
        cap.caption(images[:1])
    assert time.monotonic() - start < 6.0  # 3 s deadline, not the trickle's 15+ s
