"""API keys and the errors of remote calls: a key is checked up front and never shown.

:func:`check_key` refuses a key that cannot be one (a trailing newline read
from a file would otherwise fail deep in ``http.client`` with a message
holding the whole key); :class:`Secret` shows as ``'***'`` everywhere and is
never pickled; every message about a call is scrubbed of the key.
"""

from __future__ import annotations

from typing import Any

from xai_bridge.errors import XaiBridgeError

__all__ = ["AuthenticationError", "InvalidKeyError", "MalformedAnswer", "RemoteCaptionError", "Secret", "check_key"]


class RemoteCaptionError(XaiBridgeError, RuntimeError):
    """A remote captioning request failed for good (after the allowed retries)."""


class AuthenticationError(RemoteCaptionError, PermissionError):
    """The endpoint refused the API key (HTTP 401/403), or no key was given."""


class InvalidKeyError(AuthenticationError, ValueError):
    """The API key cannot be a key (whitespace, a newline, control or non-ASCII characters).

    Raised before anything is sent; the message never contains the key.
    """


class MalformedAnswer(TypeError, ValueError):
    """An answer that is not what the API promises (e.g. a ``null`` caption); retried, then reported."""


def check_key(value: object, source: str = "key") -> Secret:
    """Validate an API key up front and wrap it in a :class:`Secret`.

    A key is printable ASCII without spaces (Azure, OpenAI and Hugging Face
    keys all are). Anything else -- typically a trailing newline read from a
    file -- would otherwise fail deep in ``http.client`` with an exception
    whose message holds the whole key.

    Args:
        value: the key.
        source: where it came from, for the message (``"key"`` or ``"$AZURE_VISION_KEY"``).

    Raises:
        InvalidKeyError: naming the position and kind of the first bad character, never the key.
    """
    if isinstance(value, Secret):
        value = value.reveal()
    if not isinstance(value, str):
        raise InvalidKeyError(f"key: expected a str, got {type(value).__name__}")
    for i, ch in enumerate(value):
        if not "!" <= ch <= "~":
            if ch in "\r\n":
                kind = "a line break"
            elif ch.isspace():
                kind = "whitespace"
            elif ord(ch) < 32 or ord(ch) == 127:
                kind = "a control character"
            else:
                kind = "a non-ASCII character"
            raise InvalidKeyError(
                f"key: the API key from {source} has {kind} at position {i} of {len(value)}; keys are printable "
                "ASCII without spaces; strip it (e.g. key.strip()) or fix the file or variable it came from"
            )
    return Secret(value)


class Secret:
    """A string that shows as ``'***'`` in every repr/str and refuses to be pickled."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)

    def reveal(self) -> str:
        """The secret itself; only for building a request header."""
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("Secret: API keys are never pickled or saved")
