"""Records from JSONL, CSV, Parquet and plain-text files, one at a time.

Every record carries where it came from (file and line, or row for Parquet) so a bad one can
be named precisely. A bad record (invalid JSON, missing or non-string text, empty text,
invalid UTF-8) is yielded with `error` set rather than raised: the caller decides whether to
stop or skip. A text holding a lone surrogate (JSON's "\\ud800" escape: valid JSON, not
valid Unicode) is such a bad record. Problems with a whole file (missing, unreadable
header, missing column) raise InputError at once.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from embengine.errors import InvalidInputError
from embengine.validation import surrogate_error

FORMATS = ("jsonl", "csv", "parquet", "text")
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
}


class InputError(InvalidInputError):
    """An input file cannot be read at all (missing, wrong format, a needed column absent)."""


@dataclass(frozen=True)
class Record:
    """One input record: its text and id, or the reason it is unusable."""

    source: str  # the file it came from
    line: int  # 1-based line (text, JSONL, CSV: the line the record ends on) or row (Parquet)
    text: str | None
    id: Any = None
    error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass(frozen=True)
class Fields:
    """Which fields hold the text and the id (id None: ids are record positions)."""

    text: str = "text"
    id: str | None = None


def detect_format(path: str | Path) -> str:
    """The format named by the file's suffix (a trailing .gz is looked through); default text."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return _SUFFIXES.get(suffixes[-1], "text") if suffixes else "text"


def read_records(paths: Sequence[Path], fmt: str | None, fields: Fields) -> Iterator[Record]:
    """Every record of every file, in order. `fmt` None: each file's format from its suffix."""
    for path in paths:
        file_format = fmt or detect_format(path)
        if file_format not in FORMATS:
            raise InputError(f"unknown format {file_format!r}; expected one of {FORMATS}")
        if file_format == "text" and fields.id is not None:
            raise InputError(f"{path} is plain text: it has no id field {fields.id!r}")
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        reader = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "text": _text}[file_format]
        yield from reader(path, fields)


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")


def _lines(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, decoded line or None, error) for each line; bad UTF-8 is an error."""
    with _open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.rstrip(b"\r\n").decode("utf-8"), None
            except UnicodeDecodeError as exc:
                yield number, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"


def _check_text(text: Any, field: str) -> str | None:
    """Why `text` cannot be embedded, or None when it can."""
    if text is None:
        return f"field {field!r} is null"
    if not isinstance(text, str):
        return f"field {field!r} is {type(text).__name__}, expected str"
    if not text.strip():
        return f"field {field!r} is empty"
    error = surrogate_error(text)
    return None if error is None else f"field {field!r} {error}"


def _record(source: str, line: int, row: dict[str, Any], fields: Fields) -> Record:
    """A record from a mapping of fields, checked."""
    if fields.text not in row:
        return Record(source, line, None, error=f"no field {fields.text!r} (has: {_names(row)})")
    text = row[fields.text]
    if fields.id is not None:
        if row.get(fields.id) is None:
            return Record(source, line, None, error=f"no id field {fields.id!r}")
        record_id = row[fields.id]
    else:
        record_id = None
    error = _check_text(text, fields.text)
    return Record(source, line, None if error else text, record_id, error)


def _names(row: dict[str, Any]) -> str:
    names = [str(name) for name in row][:10]
    return ", ".join(names) + (", ..." if len(row) > 10 else "")


def _text(path: Path, fields: Fields) -> Iterator[Record]:
    for line, text, error in _lines(path):
        if error is None and not text.strip():
            error = "empty line"
        yield Record(str(path), line, None if error else text, error=error)


def _jsonl(path: Path, fields: Fields) -> Iterator[Record]:
    for line, raw, error in _lines(path):
        if error is not None:
            yield Record(str(path), line, None, error=error)
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            error = f"invalid JSON: {exc.msg} (column {exc.colno})"
            yield Record(str(path), line, None, error=error)
            continue
        if not isinstance(row, dict):
            yield Record(str(path), line, None, error=f"a JSON {type(row).__name__}, not an object")
            continue
        yield _record(str(path), line, row, fields)


def _csv(path: Path, fields: Fields) -> Iterator[Record]:
    with _open_binary(path) as binary:
        text_stream = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        reader = csv.DictReader(text_stream)
        try:
            header = reader.fieldnames or []
            for name in (fields.text, fields.id):
                if name is not None and name not in header:
                    raise InputError(f"{path} has no column {name!r} (columns: {header})")
            for row in reader:
                if None in row:
                    error = f"has more fields than the header's {len(header)}"
                elif any(value is None for value in row.values()):
                    error = f"has fewer fields than the header's {len(header)}"
                else:
                    yield _record(str(path), reader.line_num, row, fields)
                    continue
                yield Record(str(path), reader.line_num, None, error=error)
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{path}: not valid UTF-8 after line {reader.line_num} ({exc.reason})"
            ) from exc
        except csv.Error as exc:
            raise InputError(f"{path}:{reader.line_num}: CSV error: {exc}") from exc


def _parquet(path: Path, fields: Fields) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise InputError(f"{path} is not a readable Parquet file: {exc}") from exc
    columns = [name for name in (fields.text, fields.id) if name is not None]
    missing = [name for name in columns if name not in parquet.schema_arrow.names]
    if missing:
        raise InputError(
            f"{path} has no column {missing[0]!r} (columns: {parquet.schema_arrow.names})"
        )
    row = 0
    for batch in parquet.iter_batches(batch_size=4096, columns=columns):
        texts = batch.column(fields.text).to_pylist()
        ids = batch.column(fields.id).to_pylist() if fields.id else [None] * len(texts)
        for text, record_id in zip(texts, ids, strict=True):
            row += 1
            values = {fields.text: text}
            if fields.id is not None:
                values[fields.id] = record_id
            yield _record(str(path), row, values, fields)


def count_records(paths: Sequence[Path], fmt: str | None) -> int | None:
    """How many records the files hold, when that is cheap to know (for progress); else None."""
    total = 0
    for path in paths:
        file_format = fmt or detect_format(path)
        if file_format == "csv" or not path.is_file():
            return None  # quoted fields may span lines: only a full parse knows
        if file_format == "parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(path).metadata.num_rows
            continue
        with _open_binary(path) as f:
            newlines, last = 0, b"\n"
            for block in iter(lambda: f.read(1 << 20), b""):
                newlines += block.count(b"\n")
                last = block[-1:]
            total += newlines + (last != b"\n")
    return total
