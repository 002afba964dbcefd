"""Quantus imports TensorFlow when present, and TensorFlow floods the output: keep it quiet while evaluate runs.

TensorFlow's C++ logs obey ``TF_CPP_MIN_LOG_LEVEL`` when it loads, its Python
logs the ``tensorflow`` logger, and absl's the absl verbosity. Each is raised
to errors only for the duration of :func:`evaluate`, then restored exactly,
so a user's own TensorFlow logging is untouched afterwards.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_tensorflow"]

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
