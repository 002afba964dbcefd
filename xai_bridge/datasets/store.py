"""The on-disk store of a dataset run: manifest, index and one ``.npz`` per image and method.

The store is a folder::

    STORE/manifest.json          methods, targets, seed, size and model of the run
    STORE/index.jsonl            one JSON line per finished image (done or failed)
    STORE/<method>/<key>.npz     one Explanation per image and method

Each ``.npz`` is written to a temporary name and renamed (see
:meth:`Explanation.save`); an image's index line is appended only after all
its files are in place. A killed run therefore leaves no half-written entry
(a torn last index line is cut off before the next one is written), and a
restart skips every image with an index line and recomputes the rest.

A resume with different settings, or with a different model, is refused: the
manifest keeps the model's fingerprint (see :func:`model_fingerprint`) or the
``model_id`` the user gave. Images are keyed by path *and content*
(:func:`image_key`): an image changed since it was explained is explained
again, its old entry replaced (never both) and reported in the summary.
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

from xai_bridge._files import write_atomic
from xai_bridge.errors import ParameterError
from xai_bridge.explanation import Explanation, jsonable, qualified_name
from xai_bridge.images import iter_image_files

__all__ = ["DatasetSummary", "Store", "image_key", "list_sources", "model_fingerprint"]


@dataclass(frozen=True)
class DatasetSummary:
    """What a run did.

    Attributes:
        done: images explained in this run.
        skipped: images already in the store.
        failed: ``(path, reason)`` of images that could not be explained.
        seconds: wall-clock time of the run.
        store: the store folder.
        engine: ``"local"`` or ``"ray"``.
        changed: images whose content changed since the store explained
            them; explained again (counted in ``done``), the old entry replaced.
    """

    done: int
    skipped: int
    failed: tuple[tuple[str, str], ...]
    seconds: float
    store: str
    engine: str = "local"
    changed: tuple[str, ...] = ()

    @property
    def images_per_second(self) -> float:
        """Images explained per second in this run."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        lines = [
            f"{self.done} done, {self.skipped} skipped, {len(self.failed)} failed in {self.seconds:.1f}s "
            f"({self.images_per_second:.2f} images/s, engine {self.engine}) -> {self.store}"
        ]
        lines += [f"  changed since stored, explained again: {path}" for path in self.changed]
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
    """A stable key for an image file: its resolved path and a hash of its bytes.

    The content, not the modification time: touching a file keeps its key,
    editing it gives a new one (the store then explains it again).
    """
    content = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                content.update(block)
        digest = content.hexdigest()
    except OSError:  # missing or unreadable: loading it fails and is recorded under this key
        digest = "unreadable"
    return hashlib.sha1(f"{Path(path).resolve()}|{digest}".encode()).hexdigest()[:20]


def model_fingerprint(model: Any, model_id: str | None = None) -> dict[str, Any]:
    """What the store remembers of the model, to refuse a resume with another one.

    ``model_id`` when given (the user names the model: nothing is hashed).
    Else the model's own ``fingerprint()`` (torch models: class, parameter
    shapes and a hash of the weights and buffers, preprocessing), or for
    other models the qualified names of the wrapper and of its function; a
    black box's function is only known by name, so pass ``model_id`` when
    its behaviour can change under the same name.
    """
    if model_id is not None:
        if not isinstance(model_id, str) or not model_id.strip():
            raise ParameterError(f"model_id: expected a non-empty string naming the model, got {model_id!r}")
        return {"id": model_id}
    own = getattr(model, "fingerprint", None)
    if callable(own):
        return dict(own())
    fn = getattr(model, "fn", None)
    out = {"class": qualified_name(type(model))}
    if fn is not None:  # an array model / black box: its function by qualified name (an object: by its class)
        out["fn"] = qualified_name(fn) or qualified_name(type(fn))
    return out


@dataclass
class Store:
    """An on-disk store of per-image Explanations (see the module docstring).

    Args:
        root: the folder (created if missing).
    """

    root: Path
    _records: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _by_path: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _tail_checked: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._records = {}
        self._by_path = {}
        index = self.root / "index.jsonl"
        if index.exists():
            for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a torn line from a crash: ignore it
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("key"), str):
                    self._add(rec)

    def _add(self, rec: dict[str, Any]) -> None:
        """Index a record; a later record for the same path replaces the earlier one (the image changed)."""
        old = self._by_path.get(str(rec.get("path")))
        if old is not None and old != rec["key"]:
            self._records.pop(old, None)
        self._records[rec["key"]] = rec
        self._by_path[str(rec.get("path"))] = rec["key"]

    def check_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Write the run's manifest, or refuse if the store holds a different run (other settings or model)."""
        path = self.root / "manifest.json"
        manifest = jsonable(dict(manifest))
        if path.exists():
            existing = json.loads(path.read_text())
            differ = sorted(k for k in {*existing, *manifest} if existing.get(k) != manifest.get(k))
            if differ == ["model"]:
                raise ParameterError(
                    f"out: the store {str(self.root)!r} holds results of another model (stored "
                    f"{existing.get('model')}, this one {manifest.get('model')}); use a new folder, the same model, "
                    "or model_id='<name>' to name the model yourself"
                )
            if differ:
                raise ParameterError(
                    f"out: the store {str(self.root)!r} holds a run with other settings (stored "
                    f"{ {k: existing.get(k) for k in differ} }, this run { {k: manifest.get(k) for k in differ} }); "
                    "use a new folder or the same methods, targets, seed, size and model"
                )
            return
        write_atomic(path, json.dumps(manifest, indent=2, sort_keys=True).encode())

    def file(self, method: str, key: str) -> Path:
        """Where one image's Explanation of ``method`` lives."""
        return self.root / method / f"{key}.npz"

    def record(self, rec: Mapping[str, Any]) -> None:
        """Append an index line (after the image's files are in place) and flush it to disk.

        A record for a path stored under another key (the image changed)
        replaces the old one, whose files are removed.
        """
        rec = dict(rec)
        index = self.root / "index.jsonl"
        if not self._tail_checked:
            _cut_torn_tail(index)
            self._tail_checked = True
        replaced = self.replaced_key(str(rec["path"]), rec["key"])
        if replaced is not None:
            rec["replaces"] = replaced
        with open(index, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if replaced is not None:
            for name in self._records[replaced].get("files", {}).values():
                (self.root / name).unlink(missing_ok=True)
        self._add(rec)

    def replaced_key(self, path: str, key: str) -> str | None:
        """The key ``path`` is stored under when it differs from ``key`` (its content changed), else None."""
        old = self._by_path.get(str(path))
        return old if old is not None and old != key else None

    def status(self, key: str) -> str | None:
        """``"done"``, ``"failed"`` or None for an image key."""
        rec = self._records.get(key)
        return None if rec is None else rec["status"]

    @property
    def records(self) -> list[dict[str, Any]]:
        """The current index record of every image (one per path), in the order written."""
        return list(self._records.values())

    def load(self, key: str, method: str) -> Explanation:
        """The stored Explanation of one image and method."""
        return Explanation.load(self.file(method, key))

    def explanations(self, method: str) -> Iterator[tuple[str, Explanation]]:
        """``(source path, Explanation)`` of every done image for ``method``."""
        for rec in self.records:
            if rec["status"] == "done":
                yield rec["path"], self.load(rec["key"], method)


def _cut_torn_tail(index: Path) -> None:
    """Make the index end with a newline before appending, so a torn last line never swallows the next record.

    A last line without its newline is a write cut short by a crash: kept
    (newline added) when it is a whole JSON record, cut off otherwise.
    """
    if not index.exists() or index.stat().st_size == 0:
        return
    with open(index, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:])
            whole = True
        except ValueError:
            whole = False
        if whole:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        else:
            fh.truncate(start)
        fh.flush()
        os.fsync(fh.fileno())
