"""Writing files so that readers and concurrent writers never see a partial one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    The temporary name is unique (``tempfile``), not derived from the process
    id: two threads, or two processes, saving the same path at once each
    write their own file and the last rename wins with a complete file. A
    crash leaves ``path`` untouched; the temporary file is removed on errors.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
