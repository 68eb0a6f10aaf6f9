"""Which modules an edit reaches, for warm discovery (see `warm`).

A `WarmDiscovery` keeps one long-lived discovery child (`warm_child`) with
flyte and every module of the repository imported. Its first discovery is a
cold one (the child does exactly what the cold child does, then stays). On
the next one, `files_to_rerun` tells from what the child recorded (the import graph,
who read which file, directory, stat or variable, which names each module
asked for) and from the files now, which modules must run again: the changed
modules, the modules whose body read what changed, and every module that
imports one of those (with the environments they may have touched). The
child forks and the fork runs only those again (see `warm_child`); the
result is the one a cold discovery gives.

Whatever `files_to_rerun` cannot vouch for starts a new warm child, which is a cold
discovery (`why` says what it was): a variable read while flyte started, a
read outside any module body of the repository, an added file that is a
module loaded from elsewhere, other settings. A fork whose result is not
clean (a load failure, duplicates, an order-dependent load) hands over to
the cold child once: the warm child stays for the next edit.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import reads as discovery_reads
from ..archives.bundle_files import STANDARD_IGNORED_DIRS
from ..reach import reachable
from ..stores.file_digests import RACY_SECONDS

_STARTUP_PREFIXES = ("PYTHON", "LD_")  # read by the interpreter and the loader before any Python runs


@dataclass(frozen=True)
class Snapshot:
    """What the warm child's modules were imported from, as the parent saw it right after."""

    files: dict  # loaded user file (relative) -> digest (None: missing)
    candidates: frozenset
    graph: dict  # user file -> the user files its load imported
    env_files: frozenset  # files that define an environment
    reads: dict  # (kind, value) -> (what it gave then, {module body (relative) or None})
    readers: dict  # module body -> the user files whose functions read for it (they may keep what they read)
    startup: dict  # variable -> env_value, read before the user's modules ran
    py_files: frozenset  # every .py file under the root
    dirs: dict  # directory -> mtime_ns (None: too recent to trust)
    refs: dict  # user file -> {module names its body asked for}
    modules: frozenset  # every module name loaded in the warm child
    search: tuple  # the sys.path directories under the root, absolute


def _read_now(kind: str, value: str, digests, environ) -> str | None:
    if kind == "files":
        return discovery_reads._file_digest(value, digests)
    if kind == "dirs":
        return discovery_reads._listing(value)
    if kind == "stats":
        return discovery_reads._kind(value)
    return discovery_reads.env_value(value, environ)


def _py_files(root: str) -> tuple[frozenset, dict]:
    """Every .py file under the root (relative) and the mtime of each directory listed."""
    files, dirs = set(), {}
    fresh = time.time_ns() - int(RACY_SECONDS * 1e9)
    for d, subdirs, names in os.walk(root):
        try:
            m = os.stat(d).st_mtime_ns
        except OSError:
            m = None
        rel = os.path.relpath(d, root)
        dirs[rel] = m if m is not None and m < fresh else None
        subdirs[:] = sorted(s for s in subdirs if s not in STANDARD_IGNORED_DIRS and not s.endswith(".egg-info"))
        files.update(os.path.normpath(os.path.join(rel, n)) for n in names if n.endswith(".py"))
    return frozenset(files), dirs


def _dirs_unchanged(root: str, dirs: dict) -> bool:
    for rel, m in dirs.items():
        try:
            if m is None or os.stat(os.path.join(root, rel)).st_mtime_ns != m:
                return False
        except OSError:
            return False
    return True


def _startup_names(names, environ) -> set[str]:
    return set(names) | {n for n in environ if n.startswith(_STARTUP_PREFIXES)}


def snapshot(root: str, raw: dict, record: dict, candidates, digests, environ) -> Snapshot:
    """The snapshot of a warm child that has just written its result `raw` and `record`."""
    files = {}
    for rel in raw.get("loaded_files", ()):
        files[rel] = discovery_reads._file_digest(os.path.join(root, rel), digests)
    reads: dict = {}
    readers: dict = {}
    for kind, value, body, charged in record["reads"]:
        reads.setdefault((kind, value), set()).add(body)
        if body and charged and charged != body:
            readers.setdefault(body, set()).add(charged)
    reads = {k: (_read_now(*k, digests, environ), frozenset(v)) for k, v in reads.items()}
    py, dirs = _py_files(root)
    startup = {n: discovery_reads.env_value(n, environ) for n in _startup_names(record["startup_environ"], environ)}
    return Snapshot(files, frozenset(candidates), {f: list(v) for f, v in (raw.get("graph") or {}).items()},
                    frozenset(f for _, f in raw.get("all_envs") or ()), reads, {b: sorted(c) for b, c in readers.items()},
                    startup, py, dirs,
                    {f: frozenset(v) for f, v in record["refs"].items()}, frozenset(record["modules"]),
                    tuple(record["sys_path"]))


def _names_of(rel: str, root: str, search: tuple) -> set[str]:
    """The module names a file under the root can be imported as (from each sys.path directory)."""
    path = os.path.join(root, rel)
    out = set()
    for d in search:
        if path.startswith(d.rstrip("/") + "/"):
            parts = Path(os.path.relpath(path, d)).with_suffix("").parts
            if parts and parts[-1] == "__init__":
                parts = parts[:-1]
            if parts:
                out.add(".".join(parts))
    return out


def files_to_rerun(snap: Snapshot, root: str, candidates, digests, environ) -> set[str] | str:
    """The user files to run again for the tree now, or why the warm child cannot serve it."""
    for n in sorted(_startup_names(snap.startup, environ)):
        if discovery_reads.env_value(n, environ) != snap.startup.get(n):
            return f"environment variable {n} changed (read before any module ran)"
    changed = {f for f, d in snap.files.items() if discovery_reads._file_digest(os.path.join(root, f), digests) != d}
    for (kind, value), (then, bodies) in sorted(snap.reads.items(), key=lambda kv: kv[0]):
        if _read_now(kind, value, digests, environ) != then:
            if None in bodies:
                return (f"{value} ({kind}) changed: it was read by code outside the repository (which may keep "
                        "what it read) or outside the import of any module")
            changed |= bodies
    changed |= snap.candidates - set(candidates)  # no longer a candidate: a cold child would not import it
    py = snap.py_files if _dirs_unchanged(root, snap.dirs) else _py_files(root)[0]
    for rel in sorted(py - snap.py_files):
        names = _names_of(rel, root, snap.search)
        clash = names & snap.modules
        if clash:
            return f"added {rel} is module {min(clash)}, loaded already (a namespace package, or from another directory)"
        changed |= {f for f, asked in snap.refs.items() if names & asked}
    return _closure(snap, changed)


def _closure(snap: Snapshot, changed: set[str]) -> set[str]:
    """`changed` and every module importing one; and where such a module may have
    touched an environment (a task added to it), the environment's module too; and
    where its body read through another module's function (which may have kept
    what it read: a cache), that module too, so that it reads afresh."""
    importers_of: dict[str, list[str]] = {}
    for src, dsts in snap.graph.items():
        for d in dsts:
            importers_of.setdefault(d, []).append(src)
    redo = reachable(changed, importers_of)
    while True:
        touched = reachable(redo, snap.graph) & snap.env_files
        touched |= {c for b in redo for c in snap.readers.get(b, ())}
        need = reachable(touched, importers_of)
        if need <= redo:
            return redo
        redo |= need


def unclean(raw: dict) -> str | None:
    """Why a fork's result may not stand for the cold child's (None: it may)."""
    if raw.get("failures") or raw.get("problems"):
        return "a module failed to load"
    if raw.get("duplicates"):
        return "two environments have one name"
    if not raw.get("incremental_ok"):
        return "the load depended on the order of the imports, or a module read what it had cached"
    return None


def snapshot_to_json(snap: Snapshot) -> dict:
    """The snapshot as JSON (a resident process's commands share it through a file)."""
    return {
        "files": snap.files, "candidates": sorted(snap.candidates), "graph": snap.graph,
        "env_files": sorted(snap.env_files), "reads": [[k, v, then, sorted(bodies, key=lambda b: b or "")]
                                                       for (k, v), (then, bodies) in sorted(snap.reads.items())],
        "readers": snap.readers, "startup": snap.startup, "py_files": sorted(snap.py_files), "dirs": snap.dirs,
        "refs": {f: sorted(v) for f, v in snap.refs.items()}, "modules": sorted(snap.modules), "search": list(snap.search),
    }


def snapshot_from_json(d: dict) -> Snapshot:
    return Snapshot(
        dict(d["files"]), frozenset(d["candidates"]), dict(d["graph"]), frozenset(d["env_files"]),
        {(k, v): (then, frozenset(bodies)) for k, v, then, bodies in d["reads"]}, dict(d["readers"]),
        dict(d["startup"]), frozenset(d["py_files"]), dict(d["dirs"]), {f: frozenset(v) for f, v in d["refs"].items()},
        frozenset(d["modules"]), tuple(d["search"]))
