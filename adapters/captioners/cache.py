"""A persistent on-disk cache: string keys to JSON values, in one sqlite file.

Used by the remote captioners so that a re-run, or a run that crashed half
way, never pays twice for the same request. Standard library only.

Every :meth:`DiskCache.set` is its own sqlite transaction, so an entry is
either fully written or absent: a crash never leaves a half-written value.
The file uses write-ahead logging, so several processes may share it.

Keys are built with :func:`cache_key` from the *content* of a request (image
hash, endpoint, parameters); callers must never put credentials in them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DiskCache", "cache_key", "default_cache_dir", "open_cache"]

_SCHEMA = "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"


def default_cache_dir() -> Path:
    """``$XAI_BRIDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/xai-bridge``, else ``~/.cache/xai-bridge``."""
    explicit = os.environ.get("XAI_BRIDGE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xai-bridge"


def cache_key(*parts: Any) -> str:
    """SHA-256 hex digest of ``parts`` as canonical JSON (sorted keys, no spaces)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class DiskCache:
    """A thread-safe key -> JSON value store in a sqlite file.

    Args:
        path: the sqlite file; parent folders are created (mode 0700).

    Example::

        cache = DiskCache("~/.cache/xai-bridge/captions.sqlite")
        cache.set(cache_key("azure-v3.1", image_sha256), {"caption": "a cat"})
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path).expanduser()
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                str(self._path), timeout=30.0, check_same_thread=False, isolation_level=None
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"cache: {self._path} is not a usable sqlite cache file ({exc})") from exc

    @property
    def path(self) -> Path:
        """The sqlite file."""
        return self._path

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"cache: {self._path} is closed")
        return self._conn

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        with self._lock:
            row = self._connection().execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """``{key: value}`` for the keys present."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        with self._lock:
            conn = self._connection()
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value in conn.execute(f"SELECT key, value FROM entries WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(value)
        return found

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``, atomically."""
        self.set_many({key: value})

    def set_many(self, items: Mapping[str, Any]) -> None:
        """Store several values in one transaction."""
        rows = [(k, json.dumps(v, sort_keys=True), time.time()) for k, v in items.items()]
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO entries (key, value, created) VALUES (?, ?, ?)", rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def __contains__(self, key: object) -> bool:
        with self._lock:
            row = self._connection().execute("SELECT 1 FROM entries WHERE key = ?", (key,)).fetchone()
        return row is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock:
            self._connection().execute("DELETE FROM entries")

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> DiskCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DiskCache({str(self._path)!r})"


def open_cache(
    cache: DiskCache | str | os.PathLike[str] | bool | None, filename: str = "cache.sqlite"
) -> DiskCache | None:
    """Resolve a ``cache=`` argument.

    Args:
        cache: a :class:`DiskCache`; a path to a sqlite file; ``True`` or
            ``"auto"`` for ``default_cache_dir() / filename``; ``None`` or
            ``False`` for no cache.
        filename: file name used with ``True``/``"auto"``.

    Returns:
        The cache, or None.
    """
    if cache is None or cache is False:
        return None
    if isinstance(cache, DiskCache):
        return cache
    if cache is True or cache == "auto":
        return DiskCache(default_cache_dir() / filename)
    if isinstance(cache, (str, os.PathLike)):
        return DiskCache(cache)
    raise TypeError(f"cache: expected a DiskCache, a path, True/'auto' or None, got {type(cache).__name__}")
