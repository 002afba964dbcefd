"""Fixtures of the caption tests: the loopback caption server (127.0.0.1 only)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from caption_server import CaptionServer


@pytest.fixture
def server() -> Iterator[CaptionServer]:
    """A loopback caption server speaking every protocol of :mod:`caption_server`, stopped after the test.

    Test modules that need other fault timings (``hang``, ``trickle_interval``) override it.
    """
    with CaptionServer() as srv:
        yield srv
