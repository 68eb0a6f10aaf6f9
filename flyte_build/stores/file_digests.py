"""File digests with a stat cache, so unchanged files are not read again.

A file's digest is remembered with its (size, mtime_ns, inode, ctime_ns); the
next run trusts the remembered digest while all four still match. As git does,
a file modified within the last two seconds is not remembered: its mtime may
not yet tell a second edit in the same clock tick apart.

The cache also keeps, per file digest, the imports parsed from that file (see
`imports`), so a no-op run neither reads nor parses sources.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from .. import atomic
from ..hashing import canonical_json, file_sha256, key_of

RACY_SECONDS = 2.0
FORMAT = 2


class FileDigests:
    def __init__(self, state_dir: Path | None, scope: str):
        self._path = (state_dir / f"stat-{key_of(['stat', FORMAT, scope])[:24]}.json") if state_dir else None
        self._lock = threading.Lock()
        self._entries: dict[str, list] = {}
        self._parsed: dict[str, list] = {}
        self._extra: dict[str, object] = {}  # other per-root state kept with the digests (import edges)
        self._memo: dict[str, tuple[str, int]] = {}  # this run's answers: each file is stat-checked once
        self._exec: dict[str, bool] = {}  # this run's executable bits, from the same stat
        self._dirty = False
        self.reads = 0
        if self._path is not None:
            try:
                raw = json.loads(self._path.read_bytes())
                # a state file of another shape (hand-edited, another version) is ignored, not an error
                if isinstance(raw, dict) and raw.get("format") == FORMAT and all(
                    isinstance(raw.get(k, {}), dict) for k in ("files", "parsed", "extra")
                ):
                    self._entries = raw["files"]
                    self._parsed = raw["parsed"]
                    self._extra = raw.get("extra") or {}
            except (FileNotFoundError, ValueError, KeyError):
                pass

    def digest(self, path: str | os.PathLike) -> tuple[str, int]:
        """(hex sha256, size) of the file at `path` (followed if a symlink)."""
        p = os.fspath(path)
        hit = self._memo.get(p)
        if hit is not None:
            return hit
        st = os.stat(p)
        self._exec[p] = bool(st.st_mode & 0o111)
        sig = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
        cached = self._entries.get(p)
        if isinstance(cached, list) and len(cached) == 5 and cached[:4] == sig and isinstance(cached[4], str):
            hit = self._memo[p] = (cached[4], st.st_size)
            return hit
        hex_, size = file_sha256(p)
        self.reads += 1
        racy = time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 < RACY_SECONDS
        with self._lock:
            if racy:
                self._entries.pop(p, None)
            else:
                self._entries[p] = sig + [hex_]
            self._memo[p] = (hex_, size)
            self._dirty = True
        return hex_, size

    def executable(self, path: str | os.PathLike) -> bool:
        """Whether the file had an executable bit when `digest` stat-checked it
        this run (bundles keep the bit, so action keys must see it)."""
        p = os.fspath(path)
        hit = self._exec.get(p)
        if hit is None:
            hit = self._exec[p] = bool(os.stat(p).st_mode & 0o111)
        return hit

    def paths(self) -> list[str]:
        """Every file digested in this run."""
        with self._lock:
            return list(self._memo)

    def parsed(self, hex_: str):
        return self._parsed.get(hex_)

    def remember_parsed(self, hex_: str, value) -> None:
        with self._lock:
            self._parsed[hex_] = value
            self._dirty = True

    def extra(self, name: str):
        return self._extra.get(name)

    def set_extra(self, name: str, value) -> None:
        with self._lock:
            self._extra[name] = value
            self._dirty = True

    def save(self) -> None:
        if self._path is None or not self._dirty:
            return
        with self._lock:
            # imports are kept for the contents files have now: each edit's old content would pile up
            live = {e[4] for e in self._entries.values() if isinstance(e, list) and len(e) == 5}
            live.update(hex_ for hex_, _ in self._memo.values())
            self._parsed = {h: v for h, v in self._parsed.items() if h in live}
            data = canonical_json({"format": FORMAT, "files": self._entries, "parsed": self._parsed, "extra": self._extra})
            self._dirty = False
        try:
            atomic.write_bytes(self._path, data)
        except OSError:
            pass  # a read-only cache only costs speed
