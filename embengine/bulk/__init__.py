"""Bulk embedding: files in, a resumable Parquet dataset out, in bounded memory."""

from __future__ import annotations

from embengine.bulk.job import (
    BadRecordError,
    JobMismatchError,
    JobResult,
    embed_files,
    iter_output,
    read_output,
)
from embengine.bulk.readers import FORMATS, Fields, InputError, Record, detect_format, read_records

__all__ = [
    "FORMATS",
    "BadRecordError",
    "Fields",
    "InputError",
    "JobMismatchError",
    "JobResult",
    "Record",
    "detect_format",
    "embed_files",
    "iter_output",
    "read_output",
    "read_records",
]
