"""Quantus imports TensorFlow when present, and TensorFlow floods the output: keep it quiet while evaluate runs.

TensorFlow's Python logs go to the ``tensorflow`` logger and absl's follow the
absl verbosity: both are raised to errors only for the duration of
:func:`evaluate`, then restored exactly, as is ``TF_CPP_MIN_LOG_LEVEL``. The
C++ lines TensorFlow prints while it loads (oneDNN, CUDA drivers, absl's
``InitializeLog`` notice) ignore that variable in recent releases, so the one
import of Quantus runs with file descriptor 2 pointed at the null device
(:func:`stderr_fd_silenced`); an import error is still raised as an exception.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_tensorflow", "stderr_fd_silenced"]

#: ``TF_CPP_MIN_LOG_LEVEL`` while quiet: errors only (3 would hide errors too).
_ERRORS_ONLY = "2"


@contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Errors only from TensorFlow and absl inside the block; every setting restored after."""
    old_env = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if old_env is None:  # a level the user chose stays theirs
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = _ERRORS_ONLY
    tf_logger = logging.getLogger("tensorflow")
    old_level = tf_logger.level
    tf_logger.setLevel(max(logging.ERROR, old_level))
    absl = sys.modules.get("absl.logging")
    old_verbosity = absl.get_verbosity() if absl is not None else None
    if absl is not None:
        absl.set_verbosity(absl.ERROR)
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        tf_logger.setLevel(old_level)
        if absl is not None and old_verbosity is not None:
            absl.set_verbosity(old_verbosity)


@contextmanager
def stderr_fd_silenced() -> Iterator[None]:
    """File descriptor 2 on the null device inside the block (nothing changes where it cannot be duplicated)."""
    stream = sys.stderr
    try:
        if stream is not None:
            stream.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
