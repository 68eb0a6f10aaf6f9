"""Incremental discovery: when only some files' digests changed (same
candidates, same settings), the child re-imports only the candidate modules
whose load depended on a changed file, and the environments of every module
it did not load are reused; anything it cannot vouch for falls back to a full
discovery. And the early cutoff: an edit that leaves every module's code the
same (comments, blank lines) keeps the result (`code_unchanged`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import child_run, entries
from ..config.settings import Config
from ..reach import reachable
from ..stores.file_digests import FileDigests

if TYPE_CHECKING:
    from .discover import Selection

def _env_key(d: dict):
    return (d["name"], d["file"], d["module"], d.get("variable") or "")


def incremental(cfg: Config, targets: list[str], sel: Selection, candidates: list[str], entry: dict,
                 changed: list[str], digests: FileDigests, memo=None) -> tuple[dict, dict] | None:
    """Re-import only the candidate modules an edit affects and merge with the
    cached result; None whenever the merge cannot be vouched for (then a full
    discovery runs: correctness first).

    `graph` (file -> the user files its load imported, recorded by the child's
    import hook, see `discovery.child._ImportTracker`) says which modules'
    loads depended on a changed file: those are re-imported. A module whose
    closure holds no changed file runs the same code as last time, so what it
    defined is reused. One more rule: an environment taken from this run is
    only complete if every module that could have touched it (added a task,
    a dependency) ran too, i.e. every module importing its defining file; the
    set to re-import grows until that holds.
    """
    start = _incremental_start(cfg, candidates, entry, changed, digests)
    if start is None:
        return None
    # the child imports what the modules to redo imported last time: their code is handed over
    # (the memo's; the changed files compiled now)
    again = sorted(f for f in reachable(start.redo, start.graph_old) if f.endswith(".py") and not os.path.isabs(f))
    raw = child_run.run_child(cfg, "recursive", targets, sorted(start.redo), sel, child_run.handing(cfg, again, digests, memo))
    book = entries.split(raw)
    if not book["incremental"] or sorted(raw.get("sys_path", ())) != sorted(start.old.get("sys_path", ())):
        return None
    return _merge(start, raw, book)


@dataclass(frozen=True)
class _IncrementalStart:
    """What an incremental discovery starts from: the cached result and import
    graph, and the candidate modules to import again."""

    old: dict  # the cached result
    graph_old: dict  # file -> the user files its load imported
    all_old: list  # [env name, defining file] of every environment created
    cands: set
    importers_of: dict
    env_files: set
    redo: set
    code_old: dict  # file -> code_print, as last imported


def _incremental_start(cfg: Config, candidates: list[str], entry: dict, changed: list[str],
                       digests: FileDigests) -> _IncrementalStart | None:
    from ..engine.import_edges import import_records

    old = entry["result"]
    graph_old, all_old = entries.unpack(entry.get("graph")), entry.get("all_envs")
    if not graph_old or all_old is None or old.get("failures"):
        return None
    cands = set(candidates)
    # a file the last run did not load (an `__init__.py` now where a namespace
    # package was, `entries.digests_of`): no import graph says which loads reach it
    if any(rel not in graph_old for rel in changed):
        return None
    # a changed file that no longer parses (or is gone): the full discovery
    # reports it exactly as it always has
    for rel in changed:
        if rel.endswith(".py"):
            path = str(cfg.root / rel)
            try:
                import_records(path, digests.digest(path)[0], digests)
            except (OSError, SyntaxError, ValueError):
                return None
    importers_of: dict[str, list[str]] = {}
    for src, dsts in graph_old.items():
        for d in dsts:
            importers_of.setdefault(d, []).append(src)
    env_files = {f for _, f in all_old}
    redo = reachable(changed, importers_of) & cands
    while True:
        touched = reachable(redo, graph_old) & env_files
        need = reachable(touched, importers_of) & cands
        if need <= redo:
            break
        redo |= need
    if not redo:
        return None
    return _IncrementalStart(old, graph_old, all_old, cands, importers_of, env_files, redo, entry.get("code") or {})


def _merge(start: _IncrementalStart, raw: dict, book: dict) -> tuple[dict, dict] | None:
    """The child's result for the modules imported again, merged with the
    cached one for the rest; None when the merge cannot be vouched for."""
    fresh = set(raw["loaded_files"])  # every module imported (so run afresh) in this run
    new_env_files = {f for _, f in book["all_envs"]}
    # the modules that could have touched a fresh environment all ran again
    for f in fresh & (start.env_files | new_env_files):
        if not (reachable([f], start.importers_of) & start.cands) <= fresh:
            return None

    graph = {f: v for f, v in start.graph_old.items() if f not in fresh}
    graph.update(book["graph"])
    old_loaded = set(start.old.get("loaded_files", ()))
    roots = {c for c in start.cands if c in fresh or (c not in start.redo and c in old_loaded)}
    loaded = reachable(roots, graph)
    if not fresh <= loaded:
        return None

    def reused(file: str) -> bool:
        return file not in fresh and file in loaded

    all_envs = [x for x in start.all_old if reused(x[1])] + book["all_envs"]
    if len({name for name, _ in all_envs}) != len(all_envs):
        return None  # the same name in two files: the full discovery names both
    pool: dict[str, dict] = {}
    for e in [e for e in start.old["envs"] if reused(e["file"])] + raw["envs"]:
        if e["name"] in pool:
            return None
        pool[e["name"]] = e
    chosen = _reselect(pool)
    if chosen is None:
        return None
    merged = dict(raw)
    merged["envs"] = sorted(chosen.values(), key=_env_key)
    merged["loaded_files"] = sorted(loaded)
    merged["requested"] = sorted(start.redo)
    code = {f: v for f, v in start.code_old.items() if reused(f)}
    code.update(book.get("code") or {})
    book = {"graph": {f: graph.get(f, []) for f in sorted(loaded)}, "all_envs": sorted(all_envs), "incremental": True,
            "code": code}
    return merged, book


def _reselect(pool: dict[str, dict]) -> dict[str, dict] | None:
    """The selection again: selected environments (where they are defined
    decides it) and what they depend on; None when a dependency is missing."""
    chosen: dict[str, dict] = {}
    todo = sorted(n for n, e in pool.items() if e.get("selected"))
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        if name not in pool:
            return None
        chosen[name] = pool[name]
        todo.extend(chosen[name].get("depends_on", ()))
    return chosen


def code_unchanged(cfg: Config, entry: dict, changed: list[str], digests: FileDigests) -> dict | None:
    """Early cutoff: when every changed file is a module whose compiled code is
    the code last imported (`code_prints.code_print`: an edit to comments
    or blank lines at the end), the cached result stands; the entry's file
    digests updated to the new bytes, else None. A module that something read
    as text at import has no print, nor has one loaded from a `.pyc`."""
    import warnings

    from .code_prints import code_print

    prints = entry.get("code") or {}
    files = dict(entry.get("files", {}))
    for rel in changed:
        old = prints.get(rel)
        if not (isinstance(old, str) and rel.endswith(".py")):
            return None
        path = str(cfg.root / rel)
        try:
            with open(path, "rb") as f:
                data = f.read()
            hex_ = digests.digest(path)[0]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # as the import system compiles it in discovery's child (source_to_code, no -O)
                code = compile(data, path, "exec", dont_inherit=True, optimize=0)
        except (OSError, SyntaxError, ValueError):
            return None
        if hashlib.sha256(data).hexdigest() != hex_ or code_print(code) != old:
            return None  # other code (or bytes changing as we read them): import
        files[rel] = hex_
    return files
