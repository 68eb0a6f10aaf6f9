"""The local cache: a content-addressed blob store and an action cache.

Layout under the cache directory (see BUILD.md, "The cache"):

    cas/sha256/<2 hex>/<64 hex>    blobs, named by the sha256 of their bytes
    ac/<2 hex>/<64 hex>.json       action key -> the digests of its outputs
    discovery/<key>.json           cached discovery results
    state/                         stat caches, last inputs per target, run stats
    affected/, interpreters/, logs/ affected summaries, interpreter answers, build logs

Blobs are written before the action entries that name them, each through a
temporary file and a rename (see `atomic`). Readers verify: a blob whose bytes
do not hash to its name, or an action entry that does not parse or names a
missing blob, is treated as a miss, removed, and rebuilt.

So nothing here is fsynced (`atomic`'s `durable=False`): a killed build loses
nothing it wrote (the page cache outlives the process; names appear by rename
only), and what a power cut loses or tears is one of those misses. A cold
build at 5,000 files wrote 154 files here; each fsync cost 7-40 ms on a busy disk.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Callable

from .. import atomic
from ..hashing import canonical_json, file_sha256
from .action_entry import MAX_ENTRY_BYTES, ActionEntry, BadEntry, is_hex64
from .cache_dir import default_cache_dir


class LocalStore:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self._use_fd: int | None = None

    # -- builds and gc -------------------------------------------------------
    # A build holds a shared lock on `<cache>/lock` for as long as it runs; `gc`
    # with an age limit takes it exclusively, so it never removes a blob
    # between a build's lookup and its copy to `--out` (which then called the
    # blob "corrupt"). Plain `gc` (temp files, broken entries) needs no lock.
    def hold_for_build(self) -> None:
        """Take (once) this process's shared lock; released when the process ends."""
        if self._use_fd is not None:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            return  # a read-only cache directory: nothing to protect it from
        self._use_fd = fd

    def exclusive(self, timeout: float, waiting: Callable[[], None] | None = None) -> int | None:
        """The exclusive lock (an fd to close), once no build holds the cache;
        None when `timeout` seconds pass first."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        if atomic.flock_within(fd, timeout, 0.2, waiting):
            return fd
        os.close(fd)
        return None

    # -- blobs -----------------------------------------------------------
    def blob_path(self, hex_: str) -> Path:
        return self.root / "cas" / "sha256" / hex_[:2] / hex_

    def has_blob(self, hex_: str, size: int | None = None) -> bool:
        try:
            st = self.blob_path(hex_).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def verify_blob(self, hex_: str) -> bool:
        """True when the blob exists and its bytes hash to its name; a bad blob is removed."""
        path = self.blob_path(hex_)
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                # a symlink (to /dev/zero, say) or a FIFO is never a blob: hashing it may never end
                _remove(path)
                return False
            actual, _ = file_sha256(path)
        except FileNotFoundError:
            return False
        if actual != hex_:
            path.unlink(missing_ok=True)
            return False
        return True

    def put_file(self, src: Path, hex_: str | None = None) -> tuple[str, int]:
        """Store a file's bytes; returns (hex digest, size). Verifies a given digest."""
        actual, size = file_sha256(src)
        if hex_ is not None and actual != hex_:
            raise ValueError(f"digest mismatch storing {src}: expected {hex_}, got {actual}")
        dest = self.blob_path(actual)
        # a blob already there is trusted only after hashing it: a same-size
        # corrupt blob would otherwise be named by the new action entry
        if not (self.has_blob(actual, size) and self.verify_blob(actual)):
            atomic.copy_file(src, dest, durable=False)
        return actual, size

    # -- action cache ----------------------------------------------------
    def action_path(self, key: str) -> Path:
        return self.root / "ac" / key[:2] / f"{key}.json"

    def get_action(self, key: str, on_bad: Callable[[str], None] | None = None) -> ActionEntry | None:
        """The entry for `key`, or None. An entry that does not match the schema
        (truncated, foreign, hand-edited) is removed -- a miss, rebuilt -- and
        `on_bad` is told why."""
        if not is_hex64(key):
            raise ValueError(f"not an action key: {key!r}")
        path = self.action_path(key)
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                raise BadEntry("not a regular file")
            with open(path, "rb") as f:
                data = f.read(MAX_ENTRY_BYTES + 1)
            entry = ActionEntry.parse(key, data)
        except FileNotFoundError:
            return None
        except (BadEntry, OSError) as exc:
            _remove(path)
            if on_bad is not None:
                on_bad(f"local cache: refused action entry {key[:12]} ({exc}); rebuilding it")
            return None
        return entry

    def put_action(self, entry: ActionEntry) -> None:
        ActionEntry.parse(entry.key, entry.to_json())  # what we write must read back
        for out in entry.outputs:
            if not self.has_blob(out.digest, out.size):
                raise ValueError(f"action entry for {entry.target} names a missing blob {out.digest}")
        atomic.write_bytes(self.action_path(entry.key), entry.to_json(), durable=False)

    # -- small JSON documents (discovery, state) ---------------------------
    def read_json(self, rel: str) -> Any:
        try:
            return json.loads((self.root / rel).read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    def write_json(self, rel: str, value: Any) -> None:
        atomic.write_bytes(self.root / rel, canonical_json(value), durable=False)

    # -- the layout, for maintenance (see `maintenance`) ------------------------
    def write_log(self, target: str, lines: list[str], append: bool = False) -> str | None:
        """A target's log: this run's lines (or, appended, the error it failed with); its path, None if unwritable."""
        path = self.root / "logs" / f"{target.replace(':', '--')}.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a" if append else "w", errors="replace") as f:
                f.write("\n".join(lines) + "\n")
        except OSError:
            return None
        return str(path)

    def iter_blobs(self):
        yield from _two_level(self.root / "cas" / "sha256")

    def iter_actions(self):
        yield from _two_level(self.root / "ac")


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _two_level(base: Path):
    """Files two levels under `base` (`<2 hex>/<name>`); stray files or
    directories elsewhere (a sync tool's, a user's) are not the store's."""
    if not base.is_dir():
        return
    for sub in sorted(base.iterdir()):
        if not sub.is_dir() or sub.is_symlink():
            continue
        for p in sorted(sub.iterdir()):
            if p.is_file() and not p.is_symlink():
                yield p
