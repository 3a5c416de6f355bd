"""Files that never lose data: atomic writes and verified loads.

A file is written to a temporary name in the same directory, flushed and fsynced, then
renamed over the target (atomic on POSIX), and the directory is fsynced. Array bundles
carry a format version and a sha256 of their contents, checked on load, so a truncated or
corrupt file raises CorruptFileError instead of loading half a state.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

FORMAT_VERSION = 1
_MAGIC = b"EMBENGINE\x00"


from embengine.errors import CorruptFileError, ModelMismatchError  # noqa: E402 (re-exported)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(file)` on a temp file beside `path`, fsync, and rename it over `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode(target))  # mkstemp makes 0600; keep the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _file_mode(target: Path) -> int:
    """The replaced file's mode, or what a plain open() would create under the umask."""
    try:
        return target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save_arrays(
    path: str | Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> None:
    """Write named arrays and JSON metadata as one verified file, atomically.

    Layout: magic, 8-byte header length, JSON header (version, meta, sha256 of the body),
    then the body (an uncompressed .npz). Object arrays are refused: use strings or numbers.
    """
    body = io.BytesIO()
    np.savez(body, **{name: np.asarray(a) for name, a in arrays.items()})
    payload = body.getvalue()
    header = json.dumps(
        {
            "version": FORMAT_VERSION,
            "meta": dict(meta),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "size": len(payload),
        }
    ).encode()

    def write(f: IO[bytes]) -> None:
        f.write(_MAGIC)
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        f.write(payload)

    atomic_write(path, write)


def load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by save_arrays, verifying it; (arrays, meta)."""
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise CorruptFileError(f"{path} is not an embengine file (bad magic)")
    offset = len(_MAGIC)
    header_len = int.from_bytes(data[offset : offset + 8], "little")
    offset += 8
    try:
        header = json.loads(data[offset : offset + header_len])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path} has a corrupt header") from exc
    if not isinstance(header, dict) or not {"version", "meta", "sha256", "size"} <= header.keys():
        raise CorruptFileError(f"{path} has a corrupt header")
    if header.get("version") != FORMAT_VERSION:
        raise CorruptFileError(
            f"{path} has format version {header.get('version')}, expected {FORMAT_VERSION}"
        )
    payload = data[offset + header_len :]
    if len(payload) != header["size"] or hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise CorruptFileError(
            f"{path} is truncated or corrupt "
            f"({len(payload)} of {header['size']} body bytes, or checksum mismatch)"
        )
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return arrays, header["meta"]


def load_state(
    path: str | Path, kind: str, fingerprint: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load a task's saved state: verified, of the expected `kind`, made by the same model.

    CorruptFileError for damage or another kind of file; ModelMismatchError for a state
    made by another model (its vectors would not be comparable).
    """
    arrays, meta = load_arrays(path)
    if meta.get("kind") != kind:
        raise CorruptFileError(f"{path} holds a {meta.get('kind')!r}, not a {kind!r}")
    if meta.get("model") != fingerprint:
        raise ModelMismatchError(f"{path} was made with another model ({meta.get('model')})")
    return arrays, meta
