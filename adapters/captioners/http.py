"""The remote captioners' HTTP client, as it was imported before it was split (kept for older imports).

The client now lives in ``client.py`` (with ``_batch.py``, ``_claims.py``, ``_exchange.py``
and ``_transport.py``), keys and errors in ``keys.py``, the retry policy and
rate limiter in ``retry.py``, image encoding in ``encoding.py`` and the
generic captioner and tagger in ``remote.py``; every name is re-exported here.
"""

from __future__ import annotations

from .client import DEFAULT_CONCURRENCY, RemoteClient, RemoteStats, _Call
from .encoding import EncodedImage, ImageLimits, encode_image
from .keys import AuthenticationError, InvalidKeyError, MalformedAnswer, RemoteCaptionError, Secret, check_key
from .remote import RemoteCaptioner, RemoteTagger, _join, caption_text, tag_list
from .retry import RateLimiter, RetryPolicy, parse_retry_after

__all__ = [
    "DEFAULT_CONCURRENCY",
    "AuthenticationError",
    "EncodedImage",
    "ImageLimits",
    "InvalidKeyError",
    "MalformedAnswer",
    "RateLimiter",
    "RemoteCaptionError",
    "RemoteCaptioner",
    "RemoteClient",
    "RemoteStats",
    "RemoteTagger",
    "RetryPolicy",
    "Secret",
    "_Call",
    "_join",
    "caption_text",
    "check_key",
    "encode_image",
    "parse_retry_after",
    "tag_list",
]
