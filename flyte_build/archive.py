"""Deterministic `.tar.gz` archives.

The same files give the same bytes everywhere: entries sorted by name, POSIX
relative names, a directory entry before its contents, mtime 0, uid/gid 0 and
no user or group names, modes 0644 (0755 for directories and anything
executable), PAX headers only where a name needs one. The gzip layer is
Python's zlib at a fixed level with mtime 0, no file name and a fixed OS
byte, each member deflated on its own (see `write_tar_gz`), never an external
`pigz` or `gzip` whose output differs.
Each file's bytes are hashed while they are written and must equal the digest
the action key was computed from, so a file edited mid-build fails the build
instead of producing an archive that does not match its key.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import zlib
from typing import BinaryIO, Iterable

from .errors import BuildFailed

COMPRESSLEVEL = 6
MTIME = 0


class FileChanged(BuildFailed):
    pass


def _info(name: str, *, is_dir: bool, size: int = 0, executable: bool = False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    ti.mode = 0o755 if (is_dir or executable) else 0o644
    ti.size = size
    ti.mtime = MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def check_name(name: str) -> str:
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in name.split("/")):
        raise ValueError(f"unsafe archive member name: {name!r}")
    return name


# Header bytes depend only on (name, size, mode): a shared library's members
# recur in every env's bundle, so their headers are made once per process.
_HEADERS: dict[tuple[str, int, bool, bool], bytes] = {}
_STREAM_ABOVE = 8 << 20  # bigger files are copied in chunks, never held whole


def _header(name: str, *, is_dir: bool, size: int = 0, executable: bool = False) -> bytes:
    key = (name, size, is_dir, executable)
    buf = _HEADERS.get(key)
    if buf is None:
        info = _info(name, is_dir=is_dir, size=size, executable=executable)
        buf = _HEADERS[key] = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    return buf


# The gzip layer, member by member. Each tar member (its header, bytes and
# padding) is deflated on its own by a fresh compressor and ended with a sync
# flush, which leaves the stream at a byte boundary with no reference to what
# came before; such pieces concatenate into one valid deflate stream (pigz
# works the same way). So a member that sits in many bundles -- a shared
# library's module in every env's bundle -- is compressed once per process,
# not once per bundle. The bytes depend only on the member, never on the
# bundle it lands in or on the order bundles are built.
_GZIP_HEADER = b"\x1f\x8b\x08\x00" + MTIME.to_bytes(4, "little") + b"\x00\xff"  # no name, mtime 0, OS "unknown"
_FINAL_BLOCK = b"\x03\x00"  # an empty last block: what zlib's final flush of an empty stream writes
_SEGMENTS: dict[tuple[str, str, int, bool], tuple[bytes, bytes]] = {}  # (name, sha256, size, exec) -> (raw, deflated)
_SEGMENT_BUDGET = 512 << 20  # raw bytes kept per process; past it members are deflated every time
_segment_bytes = 0
_EXEC = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


def _deflate(raw: bytes) -> bytes:
    c = zlib.compressobj(COMPRESSLEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(raw) + c.flush(zlib.Z_SYNC_FLUSH)


def _dir_segment(name: str) -> tuple[bytes, bytes]:
    key = (name, "", 0, True)
    seg = _SEGMENTS.get(key)
    if seg is None:
        raw = _header(name, is_dir=True)
        seg = _SEGMENTS[key] = (raw, _deflate(raw))
    return seg


def write_tar_gz(out: BinaryIO, members: Iterable[tuple[str, str, str | None]]) -> None:
    """Write (name, source path, expected hex sha256 or None) members to `out`.

    The tar stream is the one `tarfile` writes in PAX format (same headers,
    512-byte blocks, two zero blocks and padding to a 10240-byte record at the
    end), assembled here so that headers and compressed members can be reused
    across bundles (see `_deflate`)."""
    global _segment_bytes
    members = sorted((check_name(n), p, d) for n, p, d in members)
    crc = 0
    written = 0
    out.write(_GZIP_HEADER)

    def emit(raw: bytes, deflated: bytes) -> None:
        nonlocal crc, written
        out.write(deflated)
        crc = zlib.crc32(raw, crc)
        written += len(raw)

    dirs_written: set[str] = set()
    for name, path, expected in members:
        parts = name.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in dirs_written:
                dirs_written.add(d)
                emit(*_dir_segment(d + "/"))
        if expected:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise FileChanged(f"{name}: deleted while the build ran; run the build again") from None
            seg = _SEGMENTS.get((name, expected, st.st_size, bool(st.st_mode & _EXEC)))
            if seg is not None:
                emit(*seg)  # these bytes hashed to `expected` when they were deflated
                continue
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise FileChanged(f"{name}: deleted while the build ran; run the build again") from None
        with f:
            # size and mode come from the open file, so they describe the very bytes hashed
            st = os.fstat(f.fileno())
            size = st.st_size
            executable = bool(st.st_mode & _EXEC)
            head = _header(name, is_dir=False, size=size, executable=executable)
            h = hashlib.sha256()
            if size <= _STREAM_ABOVE:
                data = f.read(size + 1)
                h.update(data)
                if len(data) != size or (expected is not None and h.hexdigest() != expected):
                    raise FileChanged(f"{name}: changed while the build ran; run the build again")
                raw = head + data + NUL * (-size % BLOCK)
                seg = (raw, _deflate(raw))
                if _segment_bytes < _SEGMENT_BUDGET:
                    _SEGMENTS[(name, h.hexdigest(), size, executable)] = seg
                    _segment_bytes += len(raw)
                emit(*seg)
                continue
            # a large file: deflated in chunks into its own piece, never held whole or kept
            c = zlib.compressobj(COMPRESSLEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
            out.write(c.compress(head))
            crc = zlib.crc32(head, crc)
            got = 0
            while got <= size and (chunk := f.read(1 << 20)):
                h.update(chunk)
                got += len(chunk)
                if got <= size:
                    out.write(c.compress(chunk))
                    crc = zlib.crc32(chunk, crc)
            if got != size or (expected is not None and h.hexdigest() != expected):
                raise FileChanged(f"{name}: changed while the build ran; run the build again")
            pad = NUL * (-size % BLOCK)
            out.write(c.compress(pad) + c.flush(zlib.Z_SYNC_FLUSH))
            crc = zlib.crc32(pad, crc)
            written += len(head) + size + len(pad)
    end = NUL * (2 * BLOCK)
    end += NUL * (-(written + len(end)) % RECORD)
    emit(end, _deflate(end))
    out.write(_FINAL_BLOCK)
    out.write((crc & 0xFFFFFFFF).to_bytes(4, "little") + (written & 0xFFFFFFFF).to_bytes(4, "little"))


BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
NUL = b"\0"
