"""One exception family for every job.

Each error subclasses EmbengineError *and* the builtin a caller would already catch
(ValueError for bad input, KeyError for unknown ids or labels, RuntimeError for a busy or
missing backend), so `except ValueError` keeps working and `except EmbengineError`
catches everything the engine raises on purpose.
"""

from __future__ import annotations


class EmbengineError(Exception):
    """Base of every error embengine raises on purpose."""


class InvalidInputError(EmbengineError, ValueError):
    """An argument or record is malformed: wrong shape, NaN, out of range, bad field."""


class InvalidTypeError(EmbengineError, TypeError):
    """An argument has the wrong type (e.g. a text that is not a str)."""


class CorruptFileError(EmbengineError, ValueError):
    """A file is truncated, corrupt, of another format version, or not embengine's."""


class ModelMismatchError(EmbengineError, ValueError):
    """Saved vectors were made by another model than the one asked to use them."""


class NotFoundError(EmbengineError, KeyError):
    """An id, label or item is not present."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class OverloadedError(EmbengineError, RuntimeError):
    """A bounded queue is full: retry later (HTTP 429)."""


class BackendError(EmbengineError, RuntimeError):
    """A backend or device cannot do what was asked (missing provider, no CUDA, ...)."""


__all__ = [
    "BackendError",
    "CorruptFileError",
    "EmbengineError",
    "InvalidInputError",
    "InvalidTypeError",
    "ModelMismatchError",
    "NotFoundError",
    "OverloadedError",
]
