"""Files that never lose data: atomic writes and verified loads.

A file is written to a temporary name in the same directory, flushed and fsynced, then
renamed over the target (atomic on POSIX), and the directory is fsynced. Array bundles
carry a format version and a sha256 of their contents, checked on load, so a truncated or
corrupt file raises CorruptFileError instead of loading half a state.

The sha256 protects against damage, not against a crafted file (anyone can recompute it),
so loading also checks the structure before allocating: the header length against the file
length, each array's declared size against the bytes that hold it (so the arrays a file
loads into never take more than its own size), only plain numeric and string dtypes, no
compressed members, no pickles. What a task then does with the arrays is checked by the
task's own loader. Saving and loading stream: neither holds the file's bytes beside the
arrays, so a million-row index costs its arrays' size in memory, not a multiple of it.

A writer killed mid-write (kill -9) leaves a `.NAME.*.tmp` file; the next write of NAME in
that directory (from any process) removes such files when their writer is gone.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import itertools
import json
import os
import socket
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

FORMAT_VERSION = 1
_MAGIC = b"EMBENGINE\x00"
_MAX_HEADER = 16 << 20  # the JSON header holds metadata only; real ones are a few KiB
# dtype kinds an array in a saved file may have: bool, ints, floats, complex, bytes, str
_DTYPE_KINDS = frozenset("biufcSU")
_CHUNK = 8 << 20  # bytes per read while hashing or loading a body
# a zip member's local header: signature, flags, name and extra lengths (the rest is skipped)
_LOCAL_HEADER = struct.Struct("<4s2xH18xHH")
_ZIP_UNSUPPORTED = 0x1 | 0x20 | 0x40  # encrypted, patched or strongly encrypted members
# temp files of writers on another host (or of an unknown writer) are removed after this long
STALE_TMP_SECONDS = 24 * 3600
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


from embengine.errors import (  # noqa: E402 (re-exported)
    CorruptFileError,
    EmbengineError,
    InvalidInputError,
    ModelMismatchError,
)

_Loader = TypeVar("_Loader", bound=Callable[..., Any])


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(file)` on a temp file beside `path`, fsync, and rename it over `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.{_HOST}-{os.getpid()}.", suffix=".tmp"
    )
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


def remove_stale_temps(target: str | Path) -> list[Path]:
    """Remove the temp files that killed writers of `target` left beside it; the removed.

    A temp file is `.NAME.HOST-PID.XXXX.tmp`: it is stale when HOST is this machine and
    process PID is gone, or (another host, or an older name) when it is untouched for
    STALE_TMP_SECONDS. A live writer's file is never removed. Called by every atomic_write
    (one directory listing: small next to the write itself).
    """
    target = Path(target)
    removed = []
    try:
        candidates = list(target.parent.glob(f".{_glob_escape(target.name)}.*.tmp"))
    except OSError:
        return []
    for tmp in candidates:
        if is_stale_temp(tmp):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def is_stale_temp(tmp: Path, *, unknown_after: float = STALE_TMP_SECONDS) -> bool:
    """Whether the atomic_write temp file `tmp` (`.NAME.HOST-PID.XXXX.tmp`) was left by a
    writer that is gone (see remove_stale_temps); a live writer's file on this host is
    never stale, one of another host or an older name after `unknown_after` seconds."""
    pieces = tmp.name.rsplit(".", 3)  # [".NAME", "HOST-PID", "XXXX", "tmp"]: no dot in XXXX
    host, _, pid = pieces[1].partition("-") if len(pieces) == 4 else ("", "", "")
    if host == _HOST and pid.isdigit():
        return not _alive(int(pid))
    try:
        return time.time() - tmp.stat().st_mtime >= unknown_after
    except OSError:
        return False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists but is another user's (or an absurd pid): leave it alone
    return True


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

    Layout: magic, 8-byte header length, JSON header (version, meta, sha256 and size of the
    body), then the body: an uncompressed .npz. The body streams into the file (16 MiB at a
    time, hashed on the way), so saving holds no copy of the arrays; the header's room is
    reserved first and filled last, padded with spaces (JSON ignores them: any reader of this
    format reads it). Only plain number, bool, bytes and str arrays: what load_arrays reads.
    """
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    for name, a in arrays.items():
        if not _plain(a.dtype):
            raise InvalidInputError(
                f"array {name!r} has dtype {a.dtype}: only numbers, bools, bytes and str save"
            )
    meta = dict(meta)
    room = len(_header(meta, "0" * 64, 2**64 - 1))  # the longest header this body can need

    def write(f: IO[bytes]) -> None:
        f.write(_MAGIC + room.to_bytes(8, "little") + b" " * room)
        body = _HashingWriter(f)
        with zipfile.ZipFile(body, "w", zipfile.ZIP_STORED) as archive:
            for name, a in arrays.items():  # as np.savez writes them, to a stream
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, a, allow_pickle=False)
        f.seek(len(_MAGIC) + 8)
        f.write(_header(meta, body.sha256.hexdigest(), body.size).ljust(room))

    atomic_write(path, write)


def _header(meta: dict[str, Any], sha256: str, size: int) -> bytes:
    return json.dumps(
        {"version": FORMAT_VERSION, "meta": meta, "sha256": sha256, "size": size}
    ).encode()


def _plain(dtype: np.dtype) -> bool:
    """Whether arrays of `dtype` may be saved and loaded: no objects (pickles), no records."""
    return dtype.kind in _DTYPE_KINDS and not dtype.hasobject and dtype.fields is None


class _HashingWriter:
    """Passes writes on to a file, hashing and counting them. Without seek(), so zipfile
    streams each member and its sizes follow it (a data descriptor) instead of seeking
    back over hashed bytes to patch them in."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._f.write(data)
        self.sha256.update(data)
        n = memoryview(data).nbytes
        self.size += n
        return n

    def flush(self) -> None:
        self._f.flush()


def load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by save_arrays, verifying it; (arrays, meta).

    CorruptFileError for anything but a well-formed file: damage (checksum), and also a
    crafted file whose header or array sizes do not fit its length (checked before any
    allocation, since a recomputed checksum passes). The file is read twice, a chunk at a
    time: once to check the sha256, then each array straight into its own buffer, so memory
    peaks at the arrays' size plus a constant. Both reads go through one open descriptor,
    so a save that replaces the file meanwhile cannot mix two versions.
    """
    path = Path(path)
    with open(path, "rb", buffering=0) as f:
        length = os.fstat(f.fileno()).st_size
        if f.read(len(_MAGIC)) != _MAGIC:
            raise CorruptFileError(f"{path} is not an embengine file (bad magic)")
        offset = len(_MAGIC)
        if length < offset + 8:
            raise CorruptFileError(f"{path} is truncated (no header length)")
        header_len = int.from_bytes(f.read(8), "little")
        offset += 8
        if header_len > min(length - offset, _MAX_HEADER):
            raise CorruptFileError(
                f"{path} is truncated or corrupt (header of {header_len} bytes, "
                f"{length - offset} bytes left in the file)"
            )
        header = _json(f.read(header_len), f"{path} has a corrupt header")
        if not (
            isinstance(header, dict)
            and {"version", "meta", "sha256", "size"} <= header.keys()
            and isinstance(header["meta"], dict)
            and isinstance(header["sha256"], str)
            and type(header["size"]) is int
        ):
            raise CorruptFileError(f"{path} has a corrupt header")
        if header.get("version") != FORMAT_VERSION:
            raise CorruptFileError(
                f"{path} has format version {header.get('version')}, expected {FORMAT_VERSION}"
            )
        body = _Window(f, offset + header_len, length - offset - header_len, path)
        if body.size != header["size"] or body.sha256() != header["sha256"]:
            raise CorruptFileError(
                f"{path} is truncated or corrupt "
                f"({body.size} of {header['size']} body bytes, or checksum mismatch)"
            )
        return _read_npz(body, path), header["meta"]


def _json(text: bytes, message: str) -> Any:
    """Parsed JSON, or CorruptFileError(message) for invalid, too deep or absurd JSON."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSONDecodeError: ValueError
        raise CorruptFileError(f"{message}: {exc}") from exc


class _Window:
    """Bytes [start, start + size) of an open file, read as a file of their own: zipfile and
    the .npy header parser see one body or one member, so no declared size or offset can
    make them read (or allocate for) bytes outside it. `crc` is the CRC-32 of the bytes
    read so far, to check a member read from its start against the archive's."""

    def __init__(self, f: IO[bytes], start: int, size: int, name: Path) -> None:
        self._f, self._start, self.size, self.name = f, start, size, name
        self._pos = 0
        self.crc = 0

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = offset + (0, self._pos, self.size)[whence]
        if position < 0:
            raise OSError(f"seek to {position}, before the start")
        self._pos = position
        return position

    def read(self, n: int | None = -1) -> bytes:
        n = self.size - self._pos if n is None or n < 0 else min(n, self.size - self._pos)
        if n <= 0:
            return b""
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        self.crc = zlib.crc32(data, self.crc)
        return data

    def fill(self, out: memoryview) -> None:
        """Fill `out` (an array's own buffer) with the next len(out) bytes: no copy."""
        self._f.seek(self._start + self._pos)
        done = 0
        while done < len(out):
            got = self._f.readinto(out[done : done + _CHUNK])
            if not got:
                raise CorruptFileError(f"{self.name} shrank while it was read")
            self.crc = zlib.crc32(out[done : done + got], self.crc)  # while still in cache
            done += got
        self._pos += done

    def window(self, start: int, size: int) -> _Window:
        return _Window(self._f, self._start + start, size, self.name)

    def sha256(self) -> str:
        """The hex sha256 of the whole window, read a chunk at a time."""
        digest = hashlib.sha256()
        chunk = memoryview(bytearray(_CHUNK))
        self._f.seek(self._start)
        left = self.size
        while left and (got := self._f.readinto(chunk[: min(left, _CHUNK)])):
            digest.update(chunk[:got])
            left -= got
        return digest.hexdigest()


def _read_npz(body: _Window, path: Path) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed .npz, each size checked against its bytes before use.

    np.load would trust a member's .npy header and allocate the declared shape up front;
    here an array is built only from bytes that are really there. Each member's CRC-32
    is checked too, as any zip reader would: a forger who recomputes the sha256 must
    recompute it as well.
    """
    try:
        members = zipfile.ZipFile(body).infolist()  # reads the central directory only
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise CorruptFileError(f"{path}: the array body is not a valid archive ({exc})") from exc
    if sum(m.file_size for m in members) > body.size:
        raise CorruptFileError(f"{path}: the archive declares more bytes than the file holds")
    arrays: dict[str, np.ndarray] = {}
    for member in members:
        name = member.filename
        if (
            not name.endswith(".npy")
            or member.compress_type != zipfile.ZIP_STORED
            or member.flag_bits & _ZIP_UNSUPPORTED
        ):
            raise CorruptFileError(f"{path}: unexpected archive member {name!r}")
        corrupt = f"{path}: archive member {name!r} is corrupt"
        data = _member_bytes(body, member, corrupt)
        arrays[name[: -len(".npy")]] = _read_npy(data, f"{path}: array {name[:-4]!r}")
        if data.crc != member.CRC:
            raise CorruptFileError(f"{corrupt} (Bad CRC-32)")
    return arrays


def _member_bytes(body: _Window, member: zipfile.ZipInfo, what: str) -> _Window:
    """Where a stored member's bytes lie (after its local header), checked to lie in `body`."""
    if not 0 <= member.header_offset < body.size:
        raise CorruptFileError(f"{what} (its header offset {member.header_offset} is outside)")
    body.seek(member.header_offset)
    local = body.read(_LOCAL_HEADER.size)
    if len(local) < _LOCAL_HEADER.size:
        raise CorruptFileError(f"{what} (no local header)")
    signature, flags, name_len, extra_len = _LOCAL_HEADER.unpack(local)
    name = body.read(name_len).decode("utf-8" if flags & 0x800 else "cp437", "replace")
    start = member.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if signature != b"PK\x03\x04" or name != member.orig_filename:
        raise CorruptFileError(f"{what} (bad local header)")
    if member.compress_size != member.file_size or start + member.file_size > body.size:
        raise CorruptFileError(f"{what} ({member.file_size} bytes declared past the body)")
    return body.window(start, member.file_size)


def _read_npy(data: _Window, what: str) -> np.ndarray:
    """One .npy array from its member's bytes: plain dtypes only, declared size == bytes
    present, checked before the array is allocated and read straight into."""
    try:
        version = np.lib.format.read_magic(data)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(data)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(data)
        else:
            raise ValueError(f"npy version {version}")
    except Exception as exc:  # ValueError, SyntaxError, tokenize.TokenError, RecursionError...
        raise CorruptFileError(f"{what} has a corrupt header ({exc!r})") from exc
    if not _plain(dtype):
        raise CorruptFileError(f"{what} has dtype {dtype}, not a plain number or string type")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise CorruptFileError(f"{what} has an invalid shape {shape}")
    count = 1
    for d in shape:
        count *= d
    present = data.size - data.tell()
    if count * dtype.itemsize != present or (count and dtype.itemsize == 0):
        raise CorruptFileError(
            f"{what} declares shape {shape} of {dtype} ({count * dtype.itemsize} bytes) "
            f"but holds {present} bytes"
        )
    flat = np.empty(count, dtype=dtype)
    if flat.nbytes:
        data.fill(memoryview(flat.view(np.uint8)))
    if fortran:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


def malformed_is_corrupt(load: _Loader) -> _Loader:
    """Decorate a loader taking `path`: any failure to build a state from the verified file
    (a missing key, a wrong type, arrays that do not fit) becomes CorruptFileError.

    The checksum passed, so such a file was crafted or written by a buggy tool: either
    way it is not a valid save, and the caller gets one clear error naming the file and
    what was wrong, with the original as the cause. Errors of the engine's own family,
    MemoryError and OSError (no such file, permissions) pass through unchanged.
    """
    signature = inspect.signature(load)

    @functools.wraps(load)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            return load(*args, **kwargs)
        except (EmbengineError, MemoryError, OSError):
            raise
        except Exception as exc:
            path = signature.bind(*args, **kwargs).arguments.get("path", "the file")
            raise CorruptFileError(
                f"{path} is not a valid save: {type(exc).__name__}: {exc} (its checksum "
                "matched, so it was made or edited outside embengine)"
            ) from exc

    return checked  # type: ignore[return-value]


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


def pack_strings(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length strings as (UTF-8 bytes, int64 offsets): any str round-trips, NULs and
    lone surrogates too, with no fixed-width padding."""
    encoded = [v.encode("utf-8", "surrogatepass") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def unpack_strings(data: np.ndarray, offsets: np.ndarray, n: int, what: str) -> list[str]:
    """The n strings `pack_strings` wrote; CorruptFileError naming `what` when the bytes and
    offsets disagree or are not UTF-8."""
    if (
        data.dtype != np.uint8
        or offsets.dtype != np.int64
        or offsets.shape != (n + 1,)
        or offsets[0] != 0
        or offsets[-1] != len(data)
        or bool(np.any(np.diff(offsets) < 0))
    ):
        raise CorruptFileError(f"{what}: offsets disagree with the bytes")
    raw = data.tobytes()
    bounds = offsets.tolist()
    try:
        return [raw[a:b].decode("utf-8", "surrogatepass") for a, b in itertools.pairwise(bounds)]
    except UnicodeDecodeError as exc:
        raise CorruptFileError(f"{what}: not UTF-8") from exc
