"""The code discovery's parent compiled, kept between runs (`discovery.code`).

A discovery that imports modules (a full one, or an incremental one) hands
its child compiled code so the child does not compile it again. Without this
memo the parent compiled every module again on each such run (3,500 modules,
about 5 s of CPU at 5,000 files) to hand over the same code as last time.
Now a module's frame (its code as marshal data with its `code_print`,
`discovery.code`'s unit of handing over) is kept per file and reused while the
file's bytes have the same sha256: an edit compiles only the files it changed.

One file per project root and Python (bytecode differs between versions),
under the cache's `state/`: a magic line, the sha256 of the body, the body
(marshal data: {file relative to the root: (sha256 of its source, frame)}).
It is state, never input: a file that is not exactly that (torn, edited,
another version, not a file) is ignored whole and written afresh. The child
takes a frame only for the bytes it reads itself, at the same path (see
`discovery.code.Handed`). Bounded: each save keeps only the files of the
discovery just made, at their current digests, and at most MAX_BYTES.
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

FORMAT = 1
MAGIC = b"flyte-build discovery code memo %d\n" % FORMAT
MAX_BYTES = 256 << 20  # a 20,000-file repository's frames take about 60 MB


def path_for(state_dir: Path, root) -> Path:
    """The memo of the project at `root` for this Python and this flyte-build
    (whose `code_print` the frames hold)."""
    scope = ["code-memo", FORMAT, __version__, importlib.util.MAGIC_NUMBER.hex(), list(sys.version_info[:2]),
             os.path.realpath(root)]
    return Path(state_dir) / f"code-{key_of(scope)[:24]}.memo"


class CodeMemo:
    """Frames by (file, source digest); read on first use, written by `save`."""

    def __init__(self, path: Path | None):
        self.path = path
        self._entries: dict[str, tuple[str, bytes]] | None = None
        self._changed = False
        self.hits = 0  # frames given this run (the rest were compiled)

    def frame(self, rel: str, hex_: str) -> bytes | None:
        got = self._loaded().get(rel)
        if got is None or got[0] != hex_:
            return None
        self.hits += 1
        return got[1]

    def add(self, rel: str, hex_: str, frame: bytes) -> None:
        entries = self._loaded()
        if entries.get(rel) != (hex_, frame):
            entries[rel] = (hex_, frame)
            self._changed = True

    def save(self, current: dict[str, str | None]) -> None:
        """Keep the frames of the files in `current` (file -> its digest now);
        written only when that changes what the file holds."""
        if self.path is None or self._entries is None:
            return
        kept, size = {}, 0
        for rel, (hex_, frame) in sorted(self._entries.items()):
            if current.get(rel) == hex_ and size + len(frame) <= MAX_BYTES:
                kept[rel] = (hex_, frame)
                size += len(frame)
        if not self._changed and len(kept) == len(self._entries):
            return
        body = marshal.dumps(kept)
        try:
            atomic.write_bytes(self.path, MAGIC + hashlib.sha256(body).digest() + body, durable=False)
        except OSError:
            pass  # a read-only cache only costs speed
        self._entries, self._changed = kept, False

    def _loaded(self) -> dict[str, tuple[str, bytes]]:
        if self._entries is None:
            self._entries = _read(self.path) if self.path is not None else {}
        return self._entries


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
