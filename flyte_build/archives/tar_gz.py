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

from ..errors import BuildFailed

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
        buf = _HEADERS[key] = _plain_header(name, is_dir, size, executable) or _tarfile_header(name, is_dir, size, executable)
    return buf


def _tarfile_header(name: str, is_dir: bool, size: int, executable: bool) -> bytes:
    return _info(name, is_dir=is_dir, size=size, executable=executable).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


# A name of at most 100 ASCII bytes and a size under 8 GiB need no PAX record:
# tarfile then writes one ustar block whose other fields depend only on the
# type and mode. So that block is taken from tarfile once per (type, mode) --
# whatever this Python's tarfile writes there -- and the name, the size and
# the checksum are filled in: the same bytes (tests/test_archive_headers.py)
# for about a tenth of the cost, which a bundle check pays for every member.
_TEMPLATES: dict[tuple[bool, bool], bytes] = {}
_NAME_MAX, _SIZE_LIMIT = 100, 8 ** 11


def _plain_header(name: str, is_dir: bool, size: int, executable: bool) -> bytes | None:
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > _NAME_MAX or not name.isascii() or not 0 <= size < _SIZE_LIMIT:
        return None
    template = _TEMPLATES.get((is_dir, executable))
    if template is None:
        template = _TEMPLATES[(is_dir, executable)] = _tarfile_header("x/" if is_dir else "x", is_dir, 0, executable)
        if len(template) != BLOCK:
            return None  # this Python's tarfile wrote more than one block: it alone decides
    # name (0-100), then mode/uid/gid (100-124) as in the template, size (124-136),
    # mtime (136-148), checksum as spaces while it is summed (148-156), the rest
    buf = (raw.ljust(_NAME_MAX, NUL) + template[100:124] + b"%011o\0" % size + template[136:148] + b" " * 8
           + template[156:])
    return buf[:148] + b"%06o\0" % sum(buf) + buf[155:]


# The gzip layer, member by member. Each tar member (its header, bytes and
# padding) is deflated on its own by a fresh compressor and ended with a sync
# flush, which leaves the stream at a byte boundary with no reference to what
# came before; such pieces concatenate into one valid deflate stream (pigz
# works the same way). So a member that sits in many bundles -- a shared
# library's module in every env's bundle -- is compressed once per process,
# not once per bundle. The bytes depend only on the member, never on the
# bundle it lands in or on the order bundles are built.
GZIP_HEADER = b"\x1f\x8b\x08\x00" + MTIME.to_bytes(4, "little") + b"\x00\xff"  # no name, mtime 0, OS "unknown"
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
    gz = _GzStream(out)
    out.write(GZIP_HEADER)
    for name, member in layout(members):
        if member is None:
            gz.emit(*_dir_segment(name))
            continue
        path, expected = member
        seg = _kept_segment(name, path, expected) if expected else None
        if seg is not None:
            gz.emit(*seg)  # these bytes hashed to `expected` when they were deflated
            continue
        _emit_file(gz, name, path, expected)
    end = end_blocks(gz.written)
    gz.emit(end, _deflate(end))
    out.write(_FINAL_BLOCK)
    out.write((gz.crc & 0xFFFFFFFF).to_bytes(4, "little") + (gz.written & 0xFFFFFFFF).to_bytes(4, "little"))


def layout(members: Iterable[tuple]):
    """(name, rest of the member) in archive order: sorted by name, each directory
    (named with a trailing slash, rest None) before the first member below it."""
    dirs_written: set[str] = set()
    last = None  # the directory of the member before: its directories are all written
    for name, *rest in sorted((check_name(m[0]), *m[1:]) for m in members):
        parent = name.rpartition("/")[0]
        if parent != last:
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs_written:
                    dirs_written.add(d)
                    yield d + "/", None
            last = parent
        yield name, rest


def end_blocks(written: int) -> bytes:
    """The tar stream's end after `written` bytes: two zero blocks, padded to a record."""
    end = NUL * (2 * BLOCK)
    return end + NUL * (-(written + len(end)) % RECORD)


def dir_header(name: str) -> bytes:
    return _dir_segment(name)[0]


def file_header(name: str, size: int, executable: bool) -> bytes:
    return _header(name, is_dir=False, size=size, executable=executable)


class _GzStream:
    """The gzip member being written: deflated pieces go out as they come; the
    CRC and length of the uncompressed stream are kept for the trailer."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.crc = 0
        self.written = 0

    def emit(self, raw: bytes, deflated: bytes) -> None:
        self.out.write(deflated)
        self.crc = zlib.crc32(raw, self.crc)
        self.written += len(raw)


def _kept_segment(name: str, path: str, expected: str) -> tuple[bytes, bytes] | None:
    """The member deflated earlier in this process, if the file still has that size and mode."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileChanged(f"{name}: deleted while the build ran; run the build again") from None
    return _SEGMENTS.get((name, expected, st.st_size, bool(st.st_mode & _EXEC)))


def deflate_ahead(name: str, path: str, expected: str) -> None:
    """Deflate the member `name` of the file at `path` (whose sha256 is `expected`)
    now, kept for the bundles that take it later: the same bytes they would
    deflate themselves. Large files and a full budget are left to them."""
    if _segment_bytes >= _SEGMENT_BUDGET or _kept_segment(name, path, expected) is not None:
        return
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size > _STREAM_ABOVE:
            return
        executable = bool(st.st_mode & _EXEC)
        head = _header(name, is_dir=False, size=st.st_size, executable=executable)
        _small_segment(name, f, head, st.st_size, executable, expected)


def _emit_file(gz: _GzStream, name: str, path: str, expected: str | None) -> None:
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
        if size <= _STREAM_ABOVE:
            gz.emit(*_small_segment(name, f, head, size, executable, expected))
        else:
            _emit_large(gz, name, f, head, size, expected)


def _small_segment(name: str, f, head: bytes, size: int, executable: bool, expected: str | None) -> tuple[bytes, bytes]:
    """The member's header, bytes and padding, deflated on their own (and kept for other bundles)."""
    global _segment_bytes
    data = f.read(size + 1)
    hex_ = hashlib.sha256(data).hexdigest()
    if len(data) != size or (expected is not None and hex_ != expected):
        raise FileChanged(f"{name}: changed while the build ran; run the build again")
    raw = head + data + NUL * (-size % BLOCK)
    seg = (raw, _deflate(raw))
    if _segment_bytes < _SEGMENT_BUDGET:
        _SEGMENTS[(name, hex_, size, executable)] = seg
        _segment_bytes += len(raw)
    return seg


def _emit_large(gz: _GzStream, name: str, f, head: bytes, size: int, expected: str | None) -> None:
    """A large file: deflated in chunks into its own piece, never held whole or kept."""
    out = gz.out
    h = hashlib.sha256()
    c = zlib.compressobj(COMPRESSLEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    out.write(c.compress(head))
    gz.crc = zlib.crc32(head, gz.crc)
    got = 0
    while got <= size and (chunk := f.read(1 << 20)):
        h.update(chunk)
        got += len(chunk)
        if got <= size:
            out.write(c.compress(chunk))
            gz.crc = zlib.crc32(chunk, gz.crc)
    if got != size or (expected is not None and h.hexdigest() != expected):
        raise FileChanged(f"{name}: changed while the build ran; run the build again")
    pad = NUL * (-size % BLOCK)
    out.write(c.compress(pad) + c.flush(zlib.Z_SYNC_FLUSH))
    gz.crc = zlib.crc32(pad, gz.crc)
    gz.written += len(head) + size + len(pad)


BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
NUL = b"\0"
