"""Records (str or dict) to the text that is embedded: one public rule for every job.

Dedup, matching and the recommender embed dict records by this rule, so a user who wants
the same vectors can call `record_texts` and embed the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

from embengine.errors import InvalidInputError, InvalidTypeError

Record = Union[str, Mapping[str, object]]  # noqa: UP007 (a runtime alias; py3.10 has no `type`)


def record_texts(
    records: Sequence[Record], *, fields: Sequence[str] | None = None, template: str | None = None
) -> list[str]:
    """One text per record: strings as they are; dicts by `template` or joined `fields`.

    `template` is a str.format pattern over the dict's keys ("{name} {brand}"); without one,
    the values of `fields` (default: all keys, in order) are joined by spaces. Missing keys
    and None values count as empty strings.
    """
    if isinstance(records, (str, bytes, Mapping)):
        raise InvalidTypeError("records must be a sequence of str or dict, not a single record")
    texts = []
    for position, record in enumerate(records):
        if isinstance(record, str):
            texts.append(record)
        elif isinstance(record, Mapping):
            values = {key: "" if value is None else value for key, value in record.items()}
            if template is not None:
                try:
                    texts.append(template.format_map(_Blank(values)).strip())
                except (ValueError, IndexError) as exc:
                    raise InvalidInputError(
                        f"template {template!r} failed on records[{position}]"
                    ) from exc
            else:
                keys = list(record) if fields is None else fields
                texts.append(" ".join(str(values.get(key, "")) for key in keys).strip())
        else:
            raise InvalidTypeError(
                f"records[{position}] is {type(record).__name__}, expected str or dict"
            )
    return texts


class _Blank(dict):
    """A format_map mapping where a missing key reads as an empty string."""

    def __missing__(self, key: str) -> str:
        return ""
