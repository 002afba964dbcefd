"""Exceptions raised by xai-bridge.

Every error names the argument at fault and, where there is one, the fix.
"""

from __future__ import annotations

__all__ = [
    "BackendNotInstalledError",
    "FormatError",
    "ImageInputError",
    "IndexOutOfRangeError",
    "LibraryNotInstalledError",
    "MethodNotApplicableError",
    "ModelInputError",
    "ParameterError",
    "UnknownMethodError",
    "XaiBridgeError",
]


class XaiBridgeError(Exception):
    """Base class of every error raised on purpose by xai-bridge."""


class ImageInputError(XaiBridgeError, ValueError):
    """An image argument could not be read or interpreted."""


class LibraryNotInstalledError(XaiBridgeError, ImportError):
    """A library that a method or feature needs is not installed; the message holds the pip command."""


#: Deprecated alias of :class:`LibraryNotInstalledError` (removed in the next release).
BackendNotInstalledError = LibraryNotInstalledError


class UnknownMethodError(XaiBridgeError, KeyError):
    """No method is registered under the given name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class MethodNotApplicableError(XaiBridgeError, TypeError):
    """The method needs something the model does not offer (e.g. gradients)."""


class FormatError(XaiBridgeError, ValueError):
    """A saved file is not a valid xai-bridge file (or of an unknown version)."""


class ParameterError(XaiBridgeError, ValueError, TypeError):
    """A method parameter is unknown or has a value the method cannot use.

    It is both a ``ValueError`` and a ``TypeError`` (what Python raises for a
    bad value and for an unexpected keyword), so either ``except`` catches it.

    Attributes:
        valid: the valid parameter names, when the name was unknown.
    """

    def __init__(self, message: str, valid: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.valid = valid


class IndexOutOfRangeError(ParameterError, IndexError):
    """An index (an image or target of an Explanation) is out of range; also an ``IndexError``."""


class ModelInputError(XaiBridgeError, TypeError, ValueError):
    """A model argument, or what it was built with (prompts, processor, tokenizer), cannot be used as given.

    Both a ``TypeError`` and a ``ValueError``: the model adapters raised those before, and callers may catch either.
    """
