"""Input checks shared by the engine, the index, the store and every task.

This module sits below engine.py and tasks/ (it imports neither), so that checking input
never creates an import cycle.

Texts must be valid Unicode: a str holding a lone surrogate (U+D800..U+DFFF, which JSON's
"\\ud800" escape and Python's surrogateescape decoding produce) has no UTF-8 encoding, so
it can be neither tokenised nor hashed. `embed` refuses it with InvalidInputError naming
the text's position and the character's offset, rather than replacing it silently (a
replaced text would be cached and hashed as another text); bulk jobs report it as a bad
record (file:line), skippable with `--on-error skip`. To embed such text anyway, clean it
first: `text.encode("utf-8", "replace").decode("utf-8")` turns each surrogate into "?".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from embengine.errors import InvalidInputError, InvalidTypeError

_SURROGATE = re.compile("[\ud800-\udfff]")


def surrogate_error(text: str) -> str | None:
    """Why `text` is not valid Unicode (a lone surrogate, and where), or None when it is."""
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return None
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (
        f"has a lone surrogate {found.group()!r} at character {found.start()}: not valid "
        "Unicode (clean it with text.encode('utf-8', 'replace').decode('utf-8'))"
    )


def check_texts(texts: Iterable[str]) -> list[str]:
    """A list of str, or an error naming the first bad position.

    InvalidTypeError (a TypeError) for a non-str; InvalidInputError (a ValueError) for a
    str that is not valid Unicode (a lone surrogate).
    """
    if isinstance(texts, (str, bytes)):
        raise InvalidTypeError(
            "texts must be a sequence of str, not a single string; wrap it in a list"
        )
    items = list(texts) if not isinstance(texts, list) else texts
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidTypeError(f"texts[{position}] is {type(text).__name__}, expected str")
        error = surrogate_error(text)
        if error is not None:
            raise InvalidInputError(f"texts[{position}] {error}")
    return items
