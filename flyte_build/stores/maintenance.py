"""Keeping the local cache in order: `cache stats`, `cache verify`, `cache gc`.

gc removes temporary files and work directories a killed build left behind
(once they are an hour old: younger ones may belong to a running build),
blobs whose bytes do not hash to their name, action entries that do not parse
or name a missing blob, and, with an age limit, entries and blobs not used for
that long (by access time); a blob a kept entry names is kept. The age limit
also applies to what the cache keeps beside them (discovery results, affected
summaries, interpreter answers, logs, and each checkout's state: its stat
cache, code memo, last run): CI clones and temporary checkouts each leave a
set, which nothing else would ever remove.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from .. import atomic
from ..hashing import file_sha256
from .action_entry import ActionEntry
from .local_store import LocalStore

TMP_AGE = 3600  # seconds: a younger temporary file may belong to a running build
DAY = 86400
# kept beside the entries and blobs; each is a cache of something recomputable,
# so removing one unused for the age limit costs at most one recomputation
DOCUMENTS = ("discovery", "affected", "interpreters", "state", "logs")


def stats(store: LocalStore) -> dict:
    blobs = list(store.iter_blobs())
    actions = [p for p in store.iter_actions() if p.name.endswith(".json")]
    return {
        "path": str(store.root),
        "blobs": sum(1 for p in blobs if not p.name.startswith(atomic.TMP_PREFIX)),
        "blob_bytes": sum(p.stat().st_size for p in blobs),
        "actions": len(actions),
    }


def verify(store: LocalStore) -> list[str]:
    """Every problem found: blobs whose bytes don't match their name, unreadable
    action entries, and entries naming missing blobs."""
    problems = [f"blob {p.name}: bytes hash to {actual}" for p, actual in _bad_blobs(store)]
    for p, key, entry in _entries(store):
        if entry is None:
            problems.append(f"action {key}: unreadable entry")
            continue
        for out in entry.outputs:
            if not store.has_blob(out.digest, out.size):
                problems.append(f"action {key} ({entry.target}): missing blob {out.digest}")
    return problems


def gc(store: LocalStore, max_age_days: float | None = None) -> dict:
    """Remove what the module's docstring lists; returns the counts removed."""
    now = time.time()
    removed = {"tmp": 0, "actions": 0, "blobs": 0, "bytes": 0, "documents": 0}
    removed["tmp"] += _sweep_temporaries(store.root, now) + _sweep_work_dirs(store.root / "tmp", now)
    _drop_blobs([p for p, _ in _bad_blobs(store)], removed)
    live: set[str] = set()
    for p, _key, entry in _entries(store):
        too_old = max_age_days is not None and now - p.stat().st_atime > max_age_days * DAY
        broken = entry is None or any(not store.has_blob(o.digest, o.size) for o in entry.outputs)
        if too_old or broken:
            p.unlink(missing_ok=True)
            removed["actions"] += 1
        else:
            live.update(o.digest for o in entry.outputs)
    if max_age_days is not None:
        _drop_blobs([p for p in store.iter_blobs() if p.name not in live and now - p.stat().st_atime > max_age_days * DAY],
                    removed)
        removed["documents"] = _drop_unused_documents(store.root, now - max_age_days * DAY)
    return removed


def _drop_unused_documents(root: Path, cutoff: float) -> int:
    """Remove each entry of DOCUMENTS last used before `cutoff`; a directory (a
    checkout's state) counts as used when anything inside it was."""
    return sum(_remove_entries(root / base, lambda p: not p.name.startswith(atomic.TMP_PREFIX) and not p.is_symlink()
                               and _last_use(p) < cutoff) for base in DOCUMENTS)


def _remove_entries(directory: Path, old) -> int:
    """Remove the entries of `directory` (a tree for a real directory) for which
    `old(path)` holds; how many went. One that vanishes or resists is left."""
    n = 0
    for p in list(directory.iterdir()) if directory.is_dir() else []:
        try:
            if not old(p):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            n += 1
        except OSError:
            pass
    return n


def _last_use(p: Path) -> float:
    st = p.stat()
    if not p.is_dir():
        return max(st.st_atime, st.st_mtime)
    # not a directory's access time: listing it (this walk, a previous gc) sets that
    newest = st.st_mtime
    for dirpath, _dirs, files in os.walk(p):
        for name in files:
            try:
                fst = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            newest = max(newest, fst.st_atime, fst.st_mtime)
    return newest


def _bad_blobs(store: LocalStore):
    """(path, what its bytes hash to) of each blob whose bytes do not hash to its name."""
    for p in list(store.iter_blobs()):
        if not p.name.startswith(atomic.TMP_PREFIX):
            actual, _ = file_sha256(p)
            if actual != p.name:
                yield p, actual


def _entries(store: LocalStore):
    """(path, key, entry or None when it does not parse) of each action entry."""
    for p in list(store.iter_actions()):
        if not p.name.startswith(atomic.TMP_PREFIX):
            key = p.name.removesuffix(".json")
            yield p, key, ActionEntry.from_json(key, p.read_bytes())


def _drop_blobs(paths: list[Path], removed: dict) -> None:
    for p in paths:
        removed["bytes"] += p.stat().st_size
        p.unlink(missing_ok=True)
        removed["blobs"] += 1


def _sweep_temporaries(root: Path, now: float) -> int:
    """Old `.tmp-*` files anywhere the cache writes atomically."""
    n = 0
    for base in (root / "cas", root / "ac", root / "discovery", root / "state"):
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                p = Path(dirpath) / name
                if name.startswith(atomic.TMP_PREFIX) and now - p.stat().st_mtime > TMP_AGE:
                    p.unlink(missing_ok=True)
                    n += 1
    return n


def _sweep_work_dirs(work: Path, now: float) -> int:
    """The engine's old work directories: a killed build leaves its own behind."""
    return _remove_entries(work, lambda p: now - p.lstat().st_mtime > TMP_AGE)
