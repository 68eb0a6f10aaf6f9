"""The code discovery's parent compiled, kept between runs (`discovery.code`).

A discovery that imports modules (a full one, or an incremental one) hands
its child compiled code so the child does not compile it again. Without this
memo the parent compiled every module again on each such run (3,500 modules,
about 5 s of CPU at 5,000 files) to hand over the same code as last time.
Now a module's frame (its code as marshal data with its `code_print`,
`discovery.code`'s unit of handing over) is kept per file and reused while the
file's bytes have the same sha256: an edit compiles only the files it changed.

One directory per project root and Python (bytecode differs between
versions), under the cache's `state/`, and in it one file per source
directory: an edit rewrites only its directory's file, and a discovery reads
only the directories of the modules it hands over. Each file is a magic line,
the sha256 of the body, the body (marshal data: {file relative to the root:
(sha256 of its source, frame)}). It is state, never input: a file that is not
exactly that (torn, edited, another version, not a file) is ignored whole and
written afresh. The child takes a frame only for the bytes it reads itself, at
the same path (see `discovery.code.Handed`). Bounded: each save keeps only the
files of the discovery just made, at their current digests (a directory's file
at most MAX_BYTES), and removes the files of directories it no longer has.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import stat
import sys
from pathlib import Path

from .. import atomic
from ..__about__ import __version__
from ..hashing import key_of

FORMAT = 2  # 2: one file per source directory
MAGIC = b"flyte-build discovery code memo %d\n" % FORMAT
MAX_BYTES = 64 << 20  # per source directory; a 20,000-file repository's frames take about 60 MB in all
SUFFIX = ".memo"


def path_for(state_dir: Path, root) -> Path:
    """The memo of the project at `root` for this Python and this flyte-build
    (whose `code_print` the frames hold): a directory."""
    scope = ["code-memo", FORMAT, __version__, importlib.util.MAGIC_NUMBER.hex(), list(sys.version_info[:2]),
             os.path.realpath(root)]
    return Path(state_dir) / f"code-{key_of(scope)[:24]}"


def _directory(rel: str) -> str:
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def _shard_name(directory: str) -> str:
    return hashlib.sha256(directory.encode("utf-8", "surrogateescape")).hexdigest()[:32] + SUFFIX


class CodeMemo:
    """Frames by (file, source digest); each directory's read on first use,
    written by `save`."""

    def __init__(self, path: Path | None):
        self.path = path
        self._shards: dict[str, dict[str, tuple[str, bytes]]] = {}  # source directory -> its files' frames
        self._dirty: set[str] = set()
        self.hits = 0  # frames given this run (the rest were compiled)

    @property
    def keeps(self) -> bool:
        """Whether anything is kept for the next run (not for a tree that goes away)."""
        return self.path is not None

    def frame(self, rel: str, hex_: str) -> bytes | None:
        got = self._shard(_directory(rel)).get(rel)
        if got is None or got[0] != hex_:
            return None
        self.hits += 1
        return got[1]

    def add(self, rel: str, hex_: str, frame: bytes) -> None:
        directory = _directory(rel)
        shard = self._shard(directory)
        if shard.get(rel) != (hex_, frame):
            shard[rel] = (hex_, frame)
            self._dirty.add(directory)

    def save(self, current: dict[str, str | None]) -> None:
        """Keep the frames of the files in `current` (file -> its digest now):
        the directories read or added to this run are written where that
        changes them; those of directories `current` has none in are removed."""
        if self.path is None:
            return
        for directory, shard in self._shards.items():
            kept, size = {}, 0
            for rel, (hex_, frame) in sorted(shard.items()):
                if current.get(rel) == hex_ and size + len(frame) <= MAX_BYTES:
                    kept[rel] = (hex_, frame)
                    size += len(frame)
            if directory in self._dirty or len(kept) != len(shard):
                _write(self.path / _shard_name(directory), kept)
                self._shards[directory] = kept
        self._dirty.clear()
        live = {_shard_name(_directory(rel)) for rel in current}
        try:
            names = os.listdir(self.path)
        except OSError:
            return
        for name in names:
            if name.endswith(SUFFIX) and name not in live:
                try:
                    os.unlink(self.path / name)
                except OSError:
                    pass

    def _shard(self, directory: str) -> dict[str, tuple[str, bytes]]:
        shard = self._shards.get(directory)
        if shard is None:
            got = _read(self.path / _shard_name(directory)) if self.path else {}
            shard = self._shards[directory] = {rel: v for rel, v in got.items() if _directory(rel) == directory}
        return shard


def stored(path: Path) -> dict[str, tuple[str, bytes]]:
    """Every frame the memo at `path` holds (what `save` left)."""
    out: dict[str, tuple[str, bytes]] = {}
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return out
    for name in names:
        if name.endswith(SUFFIX):
            out.update(_read(Path(path) / name))
    return out


def _write(path: Path, entries: dict) -> None:
    try:
        if not entries:
            os.unlink(path)
            return
        body = marshal.dumps(entries)
        atomic.write_bytes(path, MAGIC + hashlib.sha256(body).digest() + body, durable=False)
    except OSError:
        pass  # a read-only cache (or a gone entry) only costs speed


def _read(path: Path) -> dict[str, tuple[str, bytes]]:
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES + 4096:
            return {}  # never opened: a FIFO would block, a huge file is not ours
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    head = len(MAGIC) + 32
    # marshal is not meant for bytes it did not write: the checksum comes first
    if not data.startswith(MAGIC) or hashlib.sha256(data[head:]).digest() != data[len(MAGIC):head]:
        return {}
    try:
        entries = marshal.loads(data[head:])
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(entries, dict):
        return {}
    return {rel: v for rel, v in entries.items()
            if isinstance(rel, str) and isinstance(v, tuple) and len(v) == 2
            and isinstance(v[0], str) and isinstance(v[1], bytes)}
