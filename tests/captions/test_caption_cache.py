"""The persistent on-disk cache (sqlite, stdlib only)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from xai_bridge.adapters.captioners.cache import DiskCache, cache_key, default_cache_dir, open_cache


def test_roundtrip_and_persistence(tmp_path):
    path = tmp_path / "sub" / "c.sqlite"
    with DiskCache(path) as cache:
        assert cache.get("k") is None and cache.get("k", 5) == 5
        cache.set("k", {"caption": "a cat", "n": [1, 2]})
        cache.set_many({"a": 1, "b": "two"})
        assert cache.get("k") == {"caption": "a cat", "n": [1, 2]}
        assert "a" in cache and "zz" not in cache and len(cache) == 3
    with DiskCache(path) as again:  # a new process would see the same
        assert again.get_many(["a", "b", "missing", "a"]) == {"a": 1, "b": "two"}
        again.set("a", 3)  # replaced, not duplicated
        assert again.get("a") == 3 and len(again) == 3
        again.clear()
        assert len(again) == 0


def test_many_keys_and_threads(tmp_path):
    cache = DiskCache(tmp_path / "c.sqlite")
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(80):
                cache.set(f"{t}-{i}", i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not errors and len(cache) == 640
    keys = [f"{t}-{i}" for t in range(8) for i in range(80)]
    assert cache.get_many(keys) == {k: int(k.split("-")[1]) for k in keys}  # 640 keys: queried in chunks of 500
    cache.close()
    cache.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        cache.get("0-0")


def test_cache_key_is_canonical():
    a = cache_key("v1", {"b": 1, "a": [1, 2]}, "sha")
    assert a == cache_key("v1", {"a": [1, 2], "b": 1}, "sha")
    assert a != cache_key("v1", {"a": [1, 2], "b": 2}, "sha")
    assert len(a) == 64 and int(a, 16) >= 0


def test_open_cache_variants(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_BRIDGE_CACHE_DIR", str(tmp_path / "auto"))
    assert default_cache_dir() == tmp_path / "auto"
    assert open_cache(None) is None and open_cache(False) is None
    auto = open_cache("auto", "x.sqlite")
    assert auto is not None and auto.path == tmp_path / "auto" / "x.sqlite"
    assert open_cache(auto) is auto
    assert open_cache(tmp_path / "p.sqlite").path == tmp_path / "p.sqlite"
    with pytest.raises(TypeError, match="cache"):
        open_cache(3)  # type: ignore[arg-type]


def test_corrupt_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError, match="cache"):
        DiskCache(bad)


def test_many_openers_of_a_new_cache_file_at_once_all_succeed(tmp_path) -> None:
    # sqlite answers one of two connections switching a new file to WAL "locked" at once (no busy wait);
    # before DiskCache retried the opening, about 1 round in 10 of this failed
    for rep in range(60):
        path = tmp_path / f"cache-{rep}.sqlite"
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def open_it(
            path: Path = path, errors: list[BaseException] = errors, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            try:
                DiskCache(path)
            except Exception as exc:  # collected for the assert
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
