"""Discovery's cache entries: what a discovery records (its result, the digests
and directory listings it depended on, the child's bookkeeping for incremental
runs), whether an entry is well formed and still holds, and which files
changed since it was written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..archives import bundle_files as files_mod
from ..config.settings import Config
from ..model import Discovery
from ..stores.file_digests import FileDigests
from ..stores.local_store import LocalStore

if TYPE_CHECKING:
    from .discover import _Tree

def well_formed(entry) -> bool:
    """A cached discovery entry of the shape `record` writes; anything else is
    treated as absent (the cache is state, never input: no internal errors)."""
    try:
        if not (isinstance(entry, dict) and isinstance(entry["result"], dict) and isinstance(entry["candidates"], list)):
            return False
        if not all(isinstance(entry.get(k, {}), dict) for k in ("dirs", "ignores", "files", "reads", "code")):
            return False
        if not all(isinstance(v, dict) for v in entry.get("reads", {}).values()):
            return False
        Discovery.from_json(entry["result"], cached=True)
        return all(isinstance(x, str) for x in entry["candidates"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def digests_of(cfg: Config, candidates: list[str], raw: dict, digests: FileDigests) -> dict:
    """The digest of every file a result was read from (None: missing), and of
    the `__init__.py` of every directory above one (None: a namespace package
    there, or none at all). An `__init__.py` added to such a directory runs
    when a module below it loads, and one removed makes it a namespace
    package: either is a change to what the modules ran, though no directory
    listing of the walk (`relisting`: it lists no `__init__.py`) tells."""
    read = set(candidates) | {f for f in raw.get("loaded_files", ()) if not os.path.isabs(f)}
    read |= package_inits(read)
    file_digests = {}
    for rel in sorted(read):
        try:
            file_digests[rel] = digests.digest(cfg.root / rel)[0]
        except OSError:
            file_digests[rel] = None
    return file_digests


def package_inits(files) -> set[str]:
    """`d/__init__.py` for every directory `d` above the relative `files`."""
    dirs: set[str] = set()
    for f in files:
        while "/" in f:
            f = f.rsplit("/", 1)[0]
            if f in dirs:
                break
            dirs.add(f)
    return {f"{d}/__init__.py" for d in dirs}


def split(raw: dict) -> dict:
    """Take the child's bookkeeping for incremental discovery out of its result."""
    graph = raw.pop("graph", None)
    all_envs = raw.pop("all_envs", None)
    code = raw.pop("code", None)
    ok = bool(raw.pop("incremental_ok", False)) and graph is not None and all_envs is not None
    # a result with load failures (kept with --ignore-load-errors) is never
    # patched: which module fails first depends on the order of the imports
    ok = ok and not raw.get("failures") and not raw.get("problems") and not raw.get("duplicates")
    return {"graph": graph, "all_envs": all_envs, "incremental": ok, "code": code if isinstance(code, dict) else {}}


def book_of(entry: dict) -> dict:
    return {"graph": unpack(entry.get("graph")), "all_envs": entry.get("all_envs"), "incremental": bool(entry.get("incremental")),
            "code": entry.get("code") or {}}


def pack(graph: dict | None) -> dict | None:
    """The import graph as indices into its sorted files: half the bytes a
    no-op run reads back."""
    if graph is None:
        return None
    files = sorted(set(graph) | {t for ts in graph.values() for t in ts})
    index = {f: i for i, f in enumerate(files)}
    return {"files": files, "edges": [sorted(index[t] for t in graph.get(f, ())) for f in files]}


def unpack(packed: dict | None) -> dict | None:
    if not isinstance(packed, dict) or "files" not in packed:
        return None
    files = packed["files"]
    return {f: [files[i] for i in ts] for f, ts in zip(files, packed["edges"])}


def record(store: LocalStore, rel_path: str, cfg: Config, tree: _Tree, file_digests: dict, raw: dict, book: dict,
            digests: FileDigests, reads: dict | None = None) -> None:
    ignores = {}
    for rel in tree.ignore_files:
        try:
            ignores[rel] = digests.digest(cfg.root / rel)[0]
        except OSError:
            ignores[rel] = None
    try:
        store.write_json(rel_path, {
            "reads": raw.get("reads_witness") or reads or {},
            "candidates": tree.candidates, "dirs": tree.dirs, "ignores": ignores, "files": file_digests, "result": raw,
            "code": book.get("code") or {},
            **({**book, "graph": pack(book["graph"])} if book.get("incremental") else {"incremental": False}),
        })
    except OSError:
        pass


def still_valid(root: Path, recorded: dict, digests: FileDigests) -> bool:
    join = files_mod.joiner(root)
    for rel, hex_ in recorded.items():
        try:
            if digests.digest(join(rel))[0] != hex_:
                return False
        except OSError:
            if hex_ is not None:
                return False
    return True


def changed(root: Path, recorded: dict, digests: FileDigests) -> list[str]:
    """The recorded files whose digest is not the recorded one."""
    out = []
    join = files_mod.joiner(root)
    for rel, hex_ in recorded.items():
        try:
            if digests.digest(join(rel))[0] != hex_:
                out.append(rel)
        except OSError:
            if hex_ is not None:
                out.append(rel)
    return out
