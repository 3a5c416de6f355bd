"""Input checks shared by the engine, the index, the store and every task.

This module sits below engine.py and tasks/ (it imports neither), so that checking input
never creates an import cycle.
"""

from __future__ import annotations

from collections.abc import Iterable

from embengine.errors import InvalidTypeError


def check_texts(texts: Iterable[str]) -> list[str]:
    """A list of str, or InvalidTypeError (a TypeError) naming the first bad position."""
    if isinstance(texts, (str, bytes)):
        raise InvalidTypeError(
            "texts must be a sequence of str, not a single string; wrap it in a list"
        )
    items = list(texts) if not isinstance(texts, list) else texts
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidTypeError(f"texts[{position}] is {type(text).__name__}, expected str")
    return items
