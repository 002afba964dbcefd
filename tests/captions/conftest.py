"""Fixtures of the caption tests: the loopback caption server (127.0.0.1 only) and the tiny tokenizers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from caption_server import CaptionServer


@pytest.fixture
def server() -> Iterator[CaptionServer]:
    """A loopback caption server speaking every protocol of :mod:`caption_server`, stopped after the test.

    Test modules that need other fault timings (``hang``, ``trickle_interval``) override it.
    """
    with CaptionServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def tok() -> Any:
    """The tiny byte-level BPE tokenizer with ``<s> $A </s>`` around each text (see ``hf_tiny.build_tokenizer``)."""
    from hf_tiny import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="module")
def causal_tok() -> Any:
    """The same tokenizer without the template, for decoder-only models."""
    from hf_tiny import build_tokenizer

    return build_tokenizer(special_template=False)
