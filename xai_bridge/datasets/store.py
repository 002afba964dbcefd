"""The on-disk store of a dataset run: manifest, index and one ``.npz`` per image and method.

The store is a folder::

    STORE/manifest.json          methods, targets, seed and size of the run
    STORE/index.jsonl            one JSON line per finished image (done or failed)
    STORE/<method>/<key>.npz     one Explanation per image and method

Each ``.npz`` is written to a temporary name and renamed (see
:meth:`Explanation.save`); an image's index line is appended only after all
its files are in place. A killed run therefore leaves no half-written entry,
and a restart skips every image with an index line and recomputes the rest.
A resume with different settings is refused.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xai_bridge.explanation import Explanation, jsonable
from xai_bridge.images import iter_image_files

__all__ = ["DatasetSummary", "Store", "image_key", "list_sources"]


@dataclass(frozen=True)
class DatasetSummary:
    """What a run did.

    Attributes:
        done: images explained in this run.
        skipped: images already in the store.
        failed: ``(path, reason)`` of images that could not be explained.
        seconds: wall-clock time of the run.
        store: the store folder.
    """

    done: int
    skipped: int
    failed: tuple[tuple[str, str], ...]
    seconds: float
    store: str
    engine: str = "local"

    @property
    def images_per_second(self) -> float:
        """Images explained per second in this run."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        lines = [
            f"{self.done} done, {self.skipped} skipped, {len(self.failed)} failed in {self.seconds:.1f}s "
            f"({self.images_per_second:.2f} images/s, engine {self.engine}) -> {self.store}"
        ]
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def list_sources(source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Image paths from a folder, a glob pattern, a list file (one path per line) or a list of paths."""
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        path = Path(text)
        if path.is_dir():
            return list(iter_image_files([path]))
        if any(ch in text for ch in "*?["):
            return sorted(Path(p) for p in globlib.glob(text, recursive=True) if Path(p).is_file())
        if path.is_file() and path.suffix.lower() in (".txt", ".lst", ".list"):
            base = path.parent
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            return [p if p.is_absolute() else base / p for p in map(Path, lines)]
        if path.is_file():
            return [path]
        raise FileNotFoundError(f"source: {text!r} is not a folder, glob pattern, list file or image file")
    return [Path(p) for p in source]


def image_key(path: Path) -> str:
    """A stable key for an image file: its resolved path, size and modification time."""
    st = path.stat() if path.exists() else None
    ident = f"{path.resolve()}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}"
    return hashlib.sha1(ident.encode()).hexdigest()[:20]


@dataclass
class Store:
    """An on-disk store of per-image Explanations (see the module docstring).

    Args:
        root: the folder (created if missing).
    """

    root: Path
    _records: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._records = {}
        index = self.root / "index.jsonl"
        if index.exists():
            for line in index.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a torn last line from a crash: ignore it
                    continue
                self._records[rec["key"]] = rec

    def check_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Write the run's manifest, or refuse if the store holds a different run."""
        path = self.root / "manifest.json"
        manifest = jsonable(dict(manifest))
        if path.exists():
            existing = json.loads(path.read_text())
            if existing != manifest:
                raise ValueError(
                    f"out: the store {str(self.root)!r} holds a run with other settings ({existing}); "
                    "use a new folder or the same methods, targets, seed and size"
                )
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.replace(tmp, path)

    def file(self, method: str, key: str) -> Path:
        """Where one image's Explanation of ``method`` lives."""
        return self.root / method / f"{key}.npz"

    def record(self, rec: Mapping[str, Any]) -> None:
        """Append an index line (after the image's files are in place) and flush it to disk."""
        with open(self.root / "index.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(rec), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._records[rec["key"]] = dict(rec)

    def status(self, key: str) -> str | None:
        """``"done"``, ``"failed"`` or None for an image key."""
        rec = self._records.get(key)
        return None if rec is None else rec["status"]

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every index record, in the order written."""
        return list(self._records.values())

    def load(self, key: str, method: str) -> Explanation:
        """The stored Explanation of one image and method."""
        return Explanation.load(self.file(method, key))

    def explanations(self, method: str) -> Iterator[tuple[str, Explanation]]:
        """``(source path, Explanation)`` of every done image for ``method``."""
        for rec in self.records:
            if rec["status"] == "done":
                yield rec["path"], self.load(rec["key"], method)
