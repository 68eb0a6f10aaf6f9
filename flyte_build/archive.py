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
from pathlib import Path
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


def write_tar_gz(out: BinaryIO, members: Iterable[tuple[str, str, str | None]]) -> None:
    """Write (name, source path, expected hex sha256 or None) members to `out`."""
    members = sorted((check_name(n), p, d) for n, p, d in members)
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=COMPRESSLEVEL, mtime=MTIME) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as tar:
            dirs_written: set[str] = set()
            for name, path, expected in members:
                parts = name.split("/")
                for i in range(1, len(parts)):
                    d = "/".join(parts[:i])
                    if d not in dirs_written:
                        dirs_written.add(d)
                        tar.addfile(_info(d + "/", is_dir=True))
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    raise FileChanged(f"{name}: deleted while the build ran; run the build again") from None
                with f:
                    # streamed, not read whole: a very large file costs no memory;
                    # size and mode come from the open file, so they describe the
                    # very bytes being hashed
                    st = os.fstat(f.fileno())
                    ti = _info(name, is_dir=False, size=st.st_size, executable=bool(st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)))
                    reader = _HashingReader(f)
                    try:
                        tar.addfile(ti, reader)
                    except OSError:  # tarfile's "unexpected end of data": it shrank
                        raise FileChanged(f"{name}: changed while the build ran; run the build again") from None
                    if reader.read(1) or (expected is not None and reader.hexdigest() != expected):
                        raise FileChanged(f"{name}: changed while the build ran; run the build again")


class _HashingReader:
    """A file wrapper that hashes what tarfile reads through it."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._h.update(data)
        return data

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def list_members(path: str | Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tar:
        return tar.getmembers()
