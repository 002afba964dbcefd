"""A persistent on-disk cache: string keys to JSON values, in one sqlite file.

Used by the remote captioners so that a re-run, or a run that crashed half
way, never pays twice for the same request. Standard library only.

Every :meth:`DiskCache.set` is its own sqlite transaction, so an entry is
either fully written or absent: a crash never leaves a half-written value.
The file uses write-ahead logging, so several processes may share it; an
in-flight *claim* (:meth:`DiskCache.claim`) lets them agree on who sends a
request, so two processes captioning the same images pay once per image.

A damaged file is detected when it is opened (sqlite's ``quick_check``) and
on every access: :class:`CacheError` names the file and the fix, or, with
``on_damage="rebuild"``, the file is moved aside and a new one started. A
row whose value is not valid JSON reads as missing (it is overwritten by the
next answer).

Keys are built with :func:`cache_key` from the *content* of a request (image
hash, endpoint, parameters); callers must never put credentials in them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from xai_bridge.errors import ParameterError, XaiBridgeError

__all__ = ["CacheError", "DiskCache", "cache_key", "default_cache_dir", "open_cache"]

logger = logging.getLogger("xai_bridge.cache")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL)",
)
_T = TypeVar("_T")
_MISSING = object()

ClaimState = Literal["mine", "busy", "done"]


class CacheError(XaiBridgeError, ValueError):
    """The cache file is damaged, locked for too long, or closed."""


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


def _loads(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return _MISSING


class DiskCache:
    """A thread-safe key -> JSON value store in a sqlite file.

    Args:
        path: the sqlite file; parent folders are created (mode 0700).
        on_damage: ``"raise"`` (default) a :class:`CacheError` naming the file
            and the fix when the file is damaged, or ``"rebuild"``: move it aside
            (``<name>.damaged-<time>``) and start an empty cache.
        timeout: seconds to wait for another process's write lock.

    Example::

        cache = DiskCache("~/.cache/xai-bridge/captions.sqlite")
        cache.set(cache_key("azure-v3.1", image_sha256), {"caption": "a cat"})
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_damage: Literal["raise", "rebuild"] = "raise",
        timeout: float = 30.0,
    ) -> None:
        if on_damage not in ("raise", "rebuild"):
            raise ParameterError(f"on_damage: expected 'raise' or 'rebuild', got {on_damage!r}")
        self._path = Path(path).expanduser()
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._on_damage = on_damage
        self._timeout = float(timeout)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._open_when_free()
        except sqlite3.OperationalError as exc:
            raise self._operational(exc) from None
        except sqlite3.DatabaseError as exc:
            self._damaged(exc)

    @property
    def path(self) -> Path:
        """The sqlite file."""
        return self._path

    # -- opening and damage
    def _open_when_free(self) -> None:
        """:meth:`_open`, retried while another process holds the file's lock, up to ``timeout`` seconds.

        Two processes opening a new file at once both switch it to WAL; sqlite
        answers one of them "database is locked" at once rather than after its
        busy timeout (waiting could deadlock), so the wait is done here.
        """
        deadline = time.monotonic() + self._timeout
        pause = 0.02
        while True:
            try:
                self._open()
                return
            except sqlite3.OperationalError as exc:
                if not _is_lock_error(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(0.5, pause * 2)

    def _open(self) -> None:
        if self._path.is_dir():
            raise CacheError(
                f"cache: {self._path} is a folder; pass the path of a file (e.g. {self._path / 'cache.sqlite'})"
            )
        conn = sqlite3.connect(str(self._path), timeout=self._timeout, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise sqlite3.DatabaseError(f"integrity check: {str(check[0][0])[:200]}")
            columns = [row[1] for row in conn.execute("PRAGMA table_info(entries)")]
            if columns != ["key", "value", "created"]:
                raise sqlite3.DatabaseError(f"table 'entries' has columns {columns}, not a cache written by xai-bridge")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _operational(self, exc: sqlite3.OperationalError) -> CacheError:
        if _is_lock_error(exc):
            return CacheError(
                f"cache: {self._path} stayed locked by another process for {self._timeout:g} s ({exc}); "
                "retry, or give each process its own cache file"
            )
        return CacheError(f"cache: cannot use {self._path} ({exc}); check its permissions and free disk space")

    def _damaged(self, exc: BaseException) -> None:
        """Rebuild (on_damage='rebuild') or raise the error that says which file and what to do."""
        reason = f"{type(exc).__name__}: {exc}"
        if self._on_damage == "raise":
            raise CacheError(
                f"cache: {self._path} is damaged ({reason}); move it aside or delete it (an empty cache is then "
                "created), or open it with DiskCache(path, on_damage='rebuild') to do that automatically"
            ) from None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self._path.with_name(f"{self._path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(str(self._path) + suffix)
            if part.exists():
                part.replace(Path(str(aside) + suffix))
        logger.warning(
            "cache: %s was damaged (%s); moved it to %s and started an empty cache", self._path, reason, aside
        )
        try:
            self._open()
        except sqlite3.DatabaseError as again:
            raise CacheError(f"cache: cannot create a new cache at {self._path} ({again})") from None

    def _run(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``op`` under the lock; sqlite errors become a :class:`CacheError` naming the file."""
        with self._lock:
            for attempt in range(2):
                if self._conn is None:
                    raise CacheError(f"cache: {self._path} is closed")
                try:
                    return op(self._conn)
                except sqlite3.OperationalError as exc:  # locked, read-only, I/O: not damage, never rebuilt
                    raise self._operational(exc) from None
                except sqlite3.DatabaseError as exc:  # corrupt pages, not a database
                    if attempt:
                        raise CacheError(f"cache: {self._path} is still damaged after a rebuild ({exc})") from None
                    self._damaged(exc)  # raises, or rebuilds and the loop tries once more
            raise AssertionError("unreachable")

    # -- values
    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` (also for a row that is not valid JSON)."""
        row = self._run(lambda c: c.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone())
        value = _MISSING if row is None else _loads(row[0])
        return default if value is _MISSING else value

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """``{key: value}`` for the keys present (rows that are not valid JSON are left out)."""
        keys = list(dict.fromkeys(keys))

        def read(conn: sqlite3.Connection) -> list[tuple[str, Any]]:
            rows: list[tuple[str, Any]] = []
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows.extend(conn.execute(f"SELECT key, value FROM entries WHERE key IN ({marks})", chunk))
            return rows

        found: dict[str, Any] = {}
        for key, text in self._run(read):
            value = _loads(text)
            if value is not _MISSING:
                found[key] = value
        return found

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``, atomically; its claim, if any, ends."""
        self.set_many({key: value})

    def set_many(self, items: Mapping[str, Any]) -> None:
        """Store several values in one transaction (their claims end with it)."""
        now = time.time()
        rows = [(k, json.dumps(v, sort_keys=True), now) for k, v in items.items()]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO entries (key, value, created) VALUES (?, ?, ?)", rows)
                conn.executemany("DELETE FROM claims WHERE key = ?", [(k,) for k, *_ in rows])
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        self._run(write)

    # -- in-flight claims
    def claim(self, key: str, owner: str, ttl: float, force: bool = False) -> ClaimState:
        """Claim ``key`` for ``owner`` for ``ttl`` seconds, unless it is stored or claimed by another owner.

        A caller that gets ``"mine"`` sends the request and then calls
        :meth:`set` (or :meth:`release` if it failed); one that gets
        ``"busy"`` waits and asks again; ``"done"`` means the value is stored.
        Claiming again extends one's own claim; an expired claim (its owner
        crashed) can be taken; ``force`` takes it anyway.

        Returns:
            ``"mine"``, ``"busy"`` or ``"done"``.
        """

        def run(conn: sqlite3.Connection) -> ClaimState:
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                state: ClaimState
                if conn.execute("SELECT 1 FROM entries WHERE key = ?", (key,)).fetchone() and not force:
                    state = "done"
                else:
                    row = conn.execute("SELECT owner, expires FROM claims WHERE key = ?", (key,)).fetchone()
                    if row is not None and row[0] != owner and row[1] > now and not force:
                        state = "busy"
                    else:
                        conn.execute(
                            "INSERT OR REPLACE INTO claims (key, owner, expires) VALUES (?, ?, ?)",
                            (key, owner, now + ttl),
                        )
                        state = "mine"
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return state

        return self._run(run)

    def release(self, key: str, owner: str) -> None:
        """End ``owner``'s claim on ``key`` (no-op if it holds none)."""
        self._run(lambda c: c.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner)))

    def __contains__(self, key: object) -> bool:
        row = self._run(lambda c: c.execute("SELECT 1 FROM entries WHERE key = ?", (key,)).fetchone())
        return row is not None

    def __len__(self) -> int:
        return int(self._run(lambda c: c.execute("SELECT COUNT(*) FROM entries").fetchone()[0]))

    def clear(self) -> None:
        """Remove every entry (and claim)."""
        self._run(lambda c: c.executescript("DELETE FROM entries; DELETE FROM claims;"))

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
    raise ParameterError(f"cache: expected a DiskCache, a path, True/'auto' or None, got {type(cache).__name__}")


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    """Whether sqlite refused because another connection holds the file's lock."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text
