"""Deterministic `.tar.gz` archives.

The same files give the same bytes everywhere: entries sorted by name, POSIX
relative names, a directory entry before its contents, mtime 0, uid/gid 0 and
no user or group names, modes 0644 (0755 for directories and anything
executable), PAX headers only where a name needs one. The gzip layer is
Python's zlib at a fixed level with mtime 0, no file name and the fixed OS
byte Python writes, never an external `pigz` or `gzip` whose output differs.
Each file's bytes are hashed while they are written and must equal the digest
the action key was computed from, so a file edited mid-build fails the build
instead of producing an archive that does not match its key.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
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


def write_tar_gz(out: BinaryIO, members: Iterable[tuple[str, str, str | None]]) -> None:
    """Write (name, source path, expected hex sha256 or None) members to `out`.

    The tar stream is the one `tarfile` writes in PAX format (same headers,
    512-byte blocks, two zero blocks and padding to a 10240-byte record at the
    end), assembled here so that headers can be reused across bundles."""
    members = sorted((check_name(n), p, d) for n, p, d in members)
    written = 0
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=COMPRESSLEVEL, mtime=MTIME) as gz:
        dirs_written: set[str] = set()
        for name, path, expected in members:
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs_written:
                    dirs_written.add(d)
                    head = _header(d + "/", is_dir=True)
                    gz.write(head)
                    written += len(head)
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                raise FileChanged(f"{name}: deleted while the build ran; run the build again") from None
            with f:
                # size and mode come from the open file, so they describe the very bytes hashed
                st = os.fstat(f.fileno())
                size = st.st_size
                head = _header(name, is_dir=False, size=size, executable=bool(st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)))
                h = hashlib.sha256()
                got = 0
                if size <= _STREAM_ABOVE:
                    data = f.read(size + 1)
                    h.update(data)
                    got = len(data)
                    if got == size:
                        gz.write(head + data + NUL * (-size % BLOCK))
                else:
                    gz.write(head)
                    while got <= size and (chunk := f.read(1 << 20)):
                        h.update(chunk)
                        got += len(chunk)
                        if got <= size:
                            gz.write(chunk)
                    if got == size:
                        gz.write(NUL * (-size % BLOCK))
                if got != size or (expected is not None and h.hexdigest() != expected):
                    raise FileChanged(f"{name}: changed while the build ran; run the build again")
                written += len(head) + size + (-size % BLOCK)
        gz.write(NUL * (2 * BLOCK))
        written += 2 * BLOCK
        gz.write(NUL * (-written % RECORD))


BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
NUL = b"\0"
