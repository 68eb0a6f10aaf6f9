"""The imports each file resolves to, kept across runs beside the stat cache.

A file's import records are parsed once per digest; the files they resolve to
are kept per file with the directories whose listing decided them, so the next
run resolves again only the files whose deciding directories changed.
"""

from __future__ import annotations

import os

from ..discovery import imports
from ..stores.file_digests import FileDigests


# under its own name: an earlier flyte-build sharing this cache reads "edges"
# and must not take this table (of another shape) for its own
EDGES_KEY, EDGES_FORMAT = "resolved_imports", 2


def load_edges(st, scope: list[str]) -> dict:
    """Last run's resolved imports, less those a directory decided that has
    changed since (a file created, removed or renamed there): only the files
    whose lookups consulted it are resolved again. Nothing is kept across a
    change of search roots or of format.

    In memory: `files` path -> [digest, targets, dir slots], `dirs` the slots'
    [directory, mtime], `restat` the slots to stat again when saving,
    `dropped` the files whose entry was dropped (a kept closure is used only
    if none of its files is one of them and all have an entry: an entry added
    later, e.g. carried by a shared result, was not what the closure followed)."""
    fresh = {"scope": scope, "dirs": [], "files": {}, "paths": [], "closures": {}, "index": {}, "restat": set(), "dropped": frozenset()}
    if not (isinstance(st, dict) and st.get("v") == EDGES_FORMAT and st.get("scope") == scope):
        return fresh
    dirs, files, paths, closures = st.get("dirs"), st.get("files"), st.get("paths"), st.get("closures")
    if not (isinstance(dirs, list) and isinstance(files, dict) and isinstance(paths, list) and isinstance(closures, dict)
            and all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) for e in dirs)):
        return fresh
    stale = {i for i, (d, m) in enumerate(dirs) if m is None or _mtime(d) != m}
    n = len(dirs)
    kept = {p: e for p, e in files.items()
            if isinstance(e, list) and len(e) == 3 and isinstance(e[2], list) and stale.isdisjoint(e[2])
            and all(type(i) is int and 0 <= i < n for i in e[2])}
    return {"scope": scope, "dirs": [list(e) for e in dirs], "files": kept, "paths": paths, "closures": closures,
            "index": {d: i for i, (d, _) in enumerate(dirs)}, "restat": stale, "dropped": frozenset(files).difference(kept)}


def with_carried(st: dict, carried: dict) -> bool:
    """Add the resolutions a shared discovery entry carried (verified here, see
    `discovery.carried_imports.verified`) for the files this table lacks;
    whether any was. Each directory keeps the mtime taken before its listing
    was checked."""
    if not carried or carried.get("scope") != st["scope"]:
        return False
    added = False
    for path, (hex_, targets, dirs) in carried["files"].items():
        if path in st["files"]:
            continue
        slots = []
        for d in dirs:
            i = st["index"].get(d)
            if i is None:
                i = st["index"][d] = len(st["dirs"])
                st["dirs"].append([d, carried["mtimes"].get(d)])
            slots.append(i)
        st["files"][path] = [hex_, targets, slots]
        added = True
    return added


def dir_slot(st: dict, d: str) -> int:
    """The slot of directory `d` in the edge store (a new one is stat-ed when saving)."""
    i = st["index"].get(d)
    if i is None:
        i = st["index"][d] = len(st["dirs"])
        st["dirs"].append([d, None])
        st["restat"].add(i)
    return i


def pruned(dirs: list, files: dict) -> tuple[list, dict]:
    """The directory slots some file still refers to, renumbered, and the files with them."""
    used = sorted({i for e in files.values() for i in e[2]})
    new = {old: n for n, old in enumerate(used)}
    return [list(dirs[i]) for i in used], {p: [e[0], e[1], [new[i] for i in e[2]]] for p, e in files.items()}


def _mtime(d: str) -> int | None:
    try:
        return os.stat(d).st_mtime_ns
    except OSError:
        return None


def import_records(path: str, hex_: str, digests: FileDigests):
    """A file's import records, parsed once per digest (kept in the stat cache);
    raises SyntaxError for a file that does not parse."""
    cached = digests.parsed(hex_)
    if cached is not None:
        try:
            if isinstance(cached, dict) and "error" in cached:
                lineno, msg = cached["error"]
                err = SyntaxError(str(msg), (path, int(lineno), 0, ""))
            else:
                return [(r[0], r[1], tuple(r[2])) for r in cached]
        except (TypeError, ValueError, KeyError, IndexError):
            cached = None  # a state file of another shape: parse again
        else:
            raise err
    with open(path, "rb") as f:
        source = f.read()
    try:
        records = imports.parse_imports(source, path)
    except SyntaxError as exc:
        digests.remember_parsed(hex_, {"error": [exc.lineno, exc.msg]})
        raise
    digests.remember_parsed(hex_, [list(r) for r in records])
    return records
