"""Atomic file writes: populate a temporary name beside the destination, then rename.

A rename within one directory is atomic on POSIX, so a reader sees either the
old file or the complete new one, and a process killed mid-write leaves only a
`.tmp-*` file that `cache gc` removes. Nothing half-written ever carries a
real name. Create-only publishing hard-links the temporary file into place
instead, which fails if the name exists: two writers racing on one content
name both succeed with one file.

Every write in flyte-build that gives a file its real name goes through here:
`write_bytes` and `copy_file` (flushed to disk first, unless the caller's
readers verify what they read), and `staged` for a
caller that fills the temporary file itself (a stream, a download) and decides
whether to publish it (a download is published only if it hashes to its name).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Staged:
    """A temporary file beside `dest`; `publish` gives it the real name."""

    path: Path
    dest: Path

    def publish(self, create_only: bool = False) -> bool:
        """Rename into place (readable by all, as a cache entry must be). With
        `create_only`, False when `dest` already exists, which is left as it is."""
        os.chmod(self.path, 0o644)
        if not create_only:
            os.replace(self.path, self.dest)
            return True
        try:
            os.link(self.path, self.dest)  # fails if dest exists: create-only, atomic
        except FileExistsError:
            return False
        return True


@contextmanager
def staged(dest: str | Path) -> Iterator[Staged]:
    """An empty temporary file beside `dest`, removed on the way out unless
    published (and, once linked create-only, removed as the extra name)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=dest.parent)
    os.close(fd)
    try:
        yield Staged(Path(tmp), dest)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _write(dest: str | Path, fill, create_only: bool, durable: bool) -> bool:
    with staged(dest) as s:
        with open(s.path, "wb") as f:
            fill(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        return s.publish(create_only)


def write_bytes(dest: str | Path, data: bytes, create_only: bool = False, durable: bool = True) -> bool:
    """Write `data` to `dest`; with `create_only`, False (and nothing written) when it exists.
    `durable=False` skips the fsync (see `copy_file`)."""
    return _write(dest, lambda f: f.write(data), create_only, durable)


def copy_file(src: str | Path, dest: str | Path, create_only: bool = False, durable: bool = True) -> bool:
    """Copy `src`'s bytes to `dest`; with `create_only`, False when it exists.

    `durable=False` skips the fsync before the rename: only for files whose every
    reader verifies them (a blob by its digest, an entry by its schema), so that
    a write a power cut lost or tore reads as a miss. A killed process loses
    nothing either way: what it wrote is in the page cache, and the rename is
    what makes the name appear."""
    with open(src, "rb") as s:
        return _write(dest, lambda d: shutil.copyfileobj(s, d, 1 << 20), create_only, durable)


def flock_within(fd: int, timeout: float, poll: float, waiting=None) -> bool:
    """Take the exclusive lock on `fd`, trying every `poll` seconds; False when
    `timeout` seconds pass first. `waiting` is called once, on the first wait."""
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            if not told and waiting is not None:
                waiting()
                told = True
            time.sleep(poll)
