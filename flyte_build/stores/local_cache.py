"""The local cache: a content-addressed blob store and an action cache.

Layout under the cache directory (see BUILD.md, "The cache"):

    cas/sha256/<2 hex>/<64 hex>    blobs, named by the sha256 of their bytes
    ac/<2 hex>/<64 hex>.json       action key -> the digests of its outputs
    discovery/<key>.json           cached discovery results
    state/                         stat caches, last inputs per target, run stats

Blobs are written before the action entries that name them, each through a
temporary file and a rename (see `atomic`). Readers verify: a blob whose bytes
do not hash to its name, or an action entry that does not parse or names a
missing blob, is treated as a miss, removed, and rebuilt.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import atomic
from .cache_dir import default_cache_dir  # noqa: F401 (re-exported: callers import it from here)
from ..hashing import canonical_json, file_sha256

ENTRY_FORMAT = 1

# The entry schema's bounds. An entry is a few hundred bytes; these only stop
# a hostile or broken one from costing memory, disk or time (see BUILD.md,
# "Trust and the shared cache").
MAX_ENTRY_BYTES = 1 << 20  # an action entry's JSON
MAX_OUTPUTS = 64
MAX_BLOB_BYTES = 16 << 30  # one output: 16 GiB
MAX_META_DEPTH = 4
MAX_META_ITEMS = 1000  # keys of one table or items of one list
MAX_META_STRING = 4096

HEX64 = re.compile(r"[0-9a-f]{64}")
# an output's name is a plain file name: its extension names the file under `--out`
OUTPUT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
TARGET = re.compile(r"[a-z][a-z0-9_-]{0,63}:[^\x00-\x1f]{1,256}")
META_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
SIG_FIELDS = {"alg", "key", "value"}


class BadEntry(ValueError):
    """An action entry that does not match the schema; the message says which field."""


def is_hex64(value: object) -> bool:
    return isinstance(value, str) and HEX64.fullmatch(value) is not None


@dataclass(frozen=True)
class Output:
    """One file an action produced."""

    name: str
    digest: str  # hex sha256
    size: int


@dataclass(frozen=True)
class ActionEntry:
    key: str
    target: str
    outputs: tuple[Output, ...]
    meta: dict = field(default_factory=dict)
    # a signature over `payload()` (see `signing`), or None; set on shared entries
    sig: dict | None = None

    def payload(self) -> bytes:
        """The signed bytes: everything but the signature."""
        return canonical_json(self._doc())

    def _doc(self) -> dict:
        return {
            "format": ENTRY_FORMAT,
            "key": self.key,
            "target": self.target,
            "outputs": [o.__dict__ for o in self.outputs],
            "meta": self.meta,
        }

    def to_json(self) -> bytes:
        doc = self._doc()
        if self.sig is not None:
            doc["sig"] = self.sig
        return canonical_json(doc)

    @classmethod
    def parse(cls, key: str, data: bytes) -> "ActionEntry":
        """The entry stored under `key`, checked against the schema; BadEntry says
        which field is wrong. Nothing in a valid entry can name a path outside
        its directory: output names are plain file names, digests 64 hex."""
        if len(data) > MAX_ENTRY_BYTES:
            raise BadEntry(f"entry is {len(data)} bytes (at most {MAX_ENTRY_BYTES})")
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError):
            raise BadEntry("not JSON") from None
        if not isinstance(raw, dict):
            raise BadEntry("not a JSON object")
        extra = set(raw) - {"format", "key", "target", "outputs", "meta", "sig"}
        if extra:
            raise BadEntry(f"unknown field {sorted(extra)[0]!r}")
        if raw.get("format") != ENTRY_FORMAT:
            raise BadEntry(f"format {raw.get('format')!r} (expected {ENTRY_FORMAT})")
        if raw.get("key") != key:
            raise BadEntry("stored under another action key")
        target = raw.get("target")
        if not isinstance(target, str) or not TARGET.fullmatch(target):
            raise BadEntry("target is not KIND:ENV")
        outs = raw.get("outputs")
        if not isinstance(outs, list) or len(outs) > MAX_OUTPUTS:
            raise BadEntry(f"outputs must be a list of at most {MAX_OUTPUTS}")
        outputs = tuple(_output(i, o) for i, o in enumerate(outs))
        if len({o.name for o in outputs}) != len(outputs):
            raise BadEntry("two outputs with one name")
        meta = raw.get("meta", {})
        if not isinstance(meta, dict):
            raise BadEntry("meta is not a table")
        _check_meta(meta, "meta", 1)
        if "digest" in meta and not (isinstance(meta["digest"], str) and meta["digest"].startswith("sha256:") and is_hex64(meta["digest"][7:])):
            raise BadEntry("meta.digest is not sha256:<64 hex>")
        sig = raw.get("sig")
        if sig is not None and not (isinstance(sig, dict) and set(sig) == SIG_FIELDS and all(isinstance(v, str) and len(v) <= 512 for v in sig.values())):
            raise BadEntry("sig is not {alg, key, value}")
        return cls(key=key, target=target, outputs=outputs, meta=meta, sig=sig)

    @classmethod
    def from_json(cls, key: str, data: bytes) -> "ActionEntry | None":
        """`parse`, with None for an entry that does not match the schema."""
        try:
            return cls.parse(key, data)
        except BadEntry:
            return None


def _output(i: int, o: object) -> Output:
    if not isinstance(o, dict) or set(o) != {"name", "digest", "size"}:
        raise BadEntry(f"outputs[{i}] is not {{name, digest, size}}")
    name, digest, size = o["name"], o["digest"], o["size"]
    if not isinstance(name, str) or not OUTPUT_NAME.fullmatch(name) or ".." in name:
        raise BadEntry(f"outputs[{i}].name is not a plain file name")
    if not is_hex64(digest):
        raise BadEntry(f"outputs[{i}].digest is not 64 lowercase hex characters")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_BYTES:
        raise BadEntry(f"outputs[{i}].size is not an integer in 0..{MAX_BLOB_BYTES}")
    return Output(name, digest, size)


def _check_meta(value: object, where: str, depth: int) -> None:
    """JSON values only, bounded in depth, breadth and string length."""
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        if len(value) > MAX_META_STRING:
            raise BadEntry(f"{where} is a string over {MAX_META_STRING} characters")
        return
    if depth > MAX_META_DEPTH:
        raise BadEntry(f"{where} is nested deeper than {MAX_META_DEPTH}")
    if isinstance(value, list):
        if len(value) > MAX_META_ITEMS:
            raise BadEntry(f"{where} has over {MAX_META_ITEMS} items")
        for i, v in enumerate(value):
            _check_meta(v, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        if len(value) > MAX_META_ITEMS:
            raise BadEntry(f"{where} has over {MAX_META_ITEMS} keys")
        for k, v in value.items():
            if depth == 1 and not META_KEY.fullmatch(k):
                raise BadEntry(f"{where} has a key that is not a plain name")
            _check_meta(v, f"{where}.{k}", depth + 1)
        return
    raise BadEntry(f"{where} is not a JSON value")


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
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return None
                if not told and waiting is not None:
                    waiting()
                    told = True
                time.sleep(0.2)

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
            atomic.copy_file(src, dest)
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
        atomic.write_bytes(self.action_path(entry.key), entry.to_json())

    # -- small JSON documents (discovery, state) ---------------------------
    def read_json(self, rel: str) -> Any:
        try:
            return json.loads((self.root / rel).read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    def write_json(self, rel: str, value: Any) -> None:
        atomic.write_bytes(self.root / rel, canonical_json(value))

    # -- maintenance -------------------------------------------------------
    def iter_blobs(self):
        yield from _two_level(self.root / "cas" / "sha256")

    def iter_actions(self):
        yield from _two_level(self.root / "ac")

    def stats(self) -> dict:
        blobs = list(self.iter_blobs())
        actions = [p for p in self.iter_actions() if p.name.endswith(".json")]
        return {
            "path": str(self.root),
            "blobs": sum(1 for p in blobs if not p.name.startswith(atomic.TMP_PREFIX)),
            "blob_bytes": sum(p.stat().st_size for p in blobs),
            "actions": len(actions),
        }

    def verify(self) -> list[str]:
        """Every problem found: blobs whose bytes don't match their name, unreadable
        action entries, entries naming missing blobs, and leftover temporary files."""
        problems = []
        for p in self.iter_blobs():
            if p.name.startswith(atomic.TMP_PREFIX):
                continue
            actual, _ = file_sha256(p)
            if actual != p.name:
                problems.append(f"blob {p.name}: bytes hash to {actual}")
        for p in self.iter_actions():
            if p.name.startswith(atomic.TMP_PREFIX):
                continue
            key = p.name.removesuffix(".json")
            entry = ActionEntry.from_json(key, p.read_bytes())
            if entry is None:
                problems.append(f"action {key}: unreadable entry")
                continue
            for out in entry.outputs:
                if not self.has_blob(out.digest, out.size):
                    problems.append(f"action {key} ({entry.target}): missing blob {out.digest}")
        return problems

    def gc(self, max_age_days: float | None = None, repair: bool = True) -> dict:
        """Remove temporary leftovers, broken entries, and (with `max_age_days`)
        entries and blobs not used for that long. Blobs still named by a kept
        action entry are kept."""
        now = time.time()
        removed = {"tmp": 0, "actions": 0, "blobs": 0, "bytes": 0}
        for base in (self.root / "cas", self.root / "ac", self.root / "discovery", self.root / "state"):
            if not base.is_dir():
                continue
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    if name.startswith(atomic.TMP_PREFIX):
                        p = Path(dirpath) / name
                        # a temp file younger than an hour may belong to a running build
                        if now - p.stat().st_mtime > 3600:
                            p.unlink(missing_ok=True)
                            removed["tmp"] += 1
        # the engine's work directories: a killed build leaves its own behind
        work = self.root / "tmp"
        if work.is_dir():
            for p in list(work.iterdir()):
                try:
                    if now - p.lstat().st_mtime <= 3600:
                        continue  # may belong to a running build
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                    removed["tmp"] += 1
                except OSError:
                    pass
        if repair:
            # what `verify` reports as a bad blob: bytes that do not hash to the name
            for p in list(self.iter_blobs()):
                if not p.name.startswith(atomic.TMP_PREFIX) and file_sha256(p)[0] != p.name:
                    removed["bytes"] += p.stat().st_size
                    p.unlink(missing_ok=True)
                    removed["blobs"] += 1
        live: set[str] = set()
        for p in list(self.iter_actions()):
            if p.name.startswith(atomic.TMP_PREFIX):
                continue
            key = p.name.removesuffix(".json")
            entry = ActionEntry.from_json(key, p.read_bytes())
            too_old = max_age_days is not None and now - p.stat().st_atime > max_age_days * 86400
            broken = entry is None or any(not self.has_blob(o.digest, o.size) for o in entry.outputs)
            if too_old or (broken and repair):
                p.unlink(missing_ok=True)
                removed["actions"] += 1
                continue
            live.update(o.digest for o in entry.outputs)
        if max_age_days is not None:
            for p in list(self.iter_blobs()):
                if p.name not in live and now - p.stat().st_atime > max_age_days * 86400:
                    removed["bytes"] += p.stat().st_size
                    p.unlink(missing_ok=True)
                    removed["blobs"] += 1
        return removed

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


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
