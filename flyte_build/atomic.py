"""Atomic file writes: populate a temporary name beside the destination, then rename.

A rename within one directory is atomic on POSIX, so a reader sees either the
old file or the complete new one, and a process killed mid-write leaves only a
`.tmp-*` file that `cache gc` removes. Nothing half-written ever carries a
real name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

TMP_PREFIX = ".tmp-"


@contextmanager
def atomic_writer(dest: str | Path, mode: str = "wb") -> Iterator[IO]:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=dest.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_bytes(dest: str | Path, data: bytes) -> None:
    with atomic_writer(dest) as f:
        f.write(data)


def copy_file(src: str | Path, dest: str | Path) -> None:
    with open(src, "rb") as s, atomic_writer(dest) as d:
        shutil.copyfileobj(s, d, 1 << 20)
