"""Writing files so that readers and concurrent writers never see a partial one."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

__all__ = ["current_umask", "write_atomic"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it: restore it at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    The temporary name is unique (``tempfile``), not derived from the process
    id: two threads, or two processes, saving the same path at once each
    write their own file and the last rename wins with a complete file. A
    crash leaves ``path`` untouched; the temporary file is removed on errors.
    The file gets the mode a plain ``open()`` would give it (0666 less the
    umask, so 0644 as the HTML report), not ``mkstemp``'s private 0600.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if hasattr(os, "fchmod"):  # mkstemp's 0600 would outlive the rename: give what open() would
                os.fchmod(fh.fileno(), 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
