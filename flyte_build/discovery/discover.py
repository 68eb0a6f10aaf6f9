"""Finding the repository's TaskEnvironments, with the same selection as `flyte deploy`.

A file and a variable name, `--all` in a file, or `--recursive` over
directories (the default: the whole root). The user's modules are imported in
a child process (`discovery.child`) that returns plain data. The result is
cached under a key of the settings that matter (root, selection, project,
domain, source roots, the Python, flyte and flyte-build versions) and is valid
while every file it read (each candidate module and each module loaded) has
the digest it had; so a no-op run imports neither user code nor flyte.

When only some files' digests changed (same candidates, same settings), a
recursive discovery is incremental: the child re-imports only the candidate
modules whose load depended on a changed file, and the environments of every
module it did not load are reused (see `_incremental`). Anything it cannot
vouch for falls back to a full discovery.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import carried_imports, imports
from . import reads as discovery_reads
from ..config import interpreter
from ..archives import bundle_files as files_mod
from ..__about__ import __version__
from ..config.settings import Config
from ..errors import UserError
from ..hashing import key_of
from ..model import Discovery
from ..reach import reachable
from ..stores.file_digests import RACY_SECONDS, FileDigests
from ..stores.local_store import LocalStore

FORMAT = 8  # 6: AppEnvironments are discovered too (EnvSpec.kind); 7: what modules read (discovery_reads); 8: EnvSpec.loaded, flyte's selection
DEFAULT_TIMEOUT = 300.0  # seconds; config `discovery-timeout`, flag --discovery-timeout


@dataclass(frozen=True)
class Selection:
    """What to discover: paths relative to the root (files or directories),
    a variable name (with one file), or every environment in the files."""

    paths: tuple[str, ...] = ()
    variable: str | None = None
    all: bool = False
    recursive: bool = False

    def describe(self) -> str:
        return " ".join(self.paths) + (f" {self.variable}" if self.variable else "")


def _plan(cfg: Config, sel: Selection) -> tuple[str, list[str]]:
    """(mode, targets relative to the root); no walking."""
    root = cfg.root
    # paths given on the command line are relative to the current directory;
    # the config's `paths` and the default (the whole root) to the root
    base = Path.cwd() if sel.paths else root
    paths = list(sel.paths) or list(cfg.paths) or ["."]
    rels = []
    for p in paths:
        absp = (base / p).resolve()
        if not absp.exists():
            raise UserError(f"{p}: no such file or directory")
        try:
            rel = absp.relative_to(root).as_posix()
        except ValueError:
            raise UserError(f"{p}: outside the root {root} (set --root-dir)") from None
        rels.append(rel if rel != "." else "")
    if len(rels) == 1 and (root / rels[0]).is_file():
        if not rels[0].endswith(".py"):
            raise UserError(f"{paths[0]}: not a Python file")
        # `flyte deploy FILE` without a variable (or with --all): every environment in the file
        return "file", [rels[0]]
    if sel.variable:
        raise UserError("a variable name selects an environment in one file; give a file, not a directory")
    if sel.all and not sel.recursive and sel.paths:
        # `flyte deploy --all DIR`: the directory's own .py files, not its subdirectories
        return "flat", [r or "." for r in rels]
    return "recursive", [r or "." for r in rels]


@dataclass(frozen=True)
class _Tree:
    """The candidate modules of a selection, and what tells they are still the same."""

    candidates: list[str]
    dirs: dict[str, int | None]  # directory -> mtime_ns (None: too recent to trust)
    ignore_files: list[str]


def _walk(cfg: Config, mode: str, targets: list[str]) -> _Tree:
    if mode == "file":
        return _Tree(list(targets), {}, [])
    candidates: set[str] = set()
    dirs: dict[str, int | None] = {}
    ignore_files: set[str] = set()
    for rel in targets:
        rel = "" if rel == "." else rel
        if (cfg.root / rel).is_file():
            candidates.add(rel)
            continue
        if mode == "flat":
            d = cfg.root / rel
            dirs[rel] = os.stat(d).st_mtime_ns
            candidates.update(f"{rel}/{n}" if rel else n for n in sorted(os.listdir(d))
                              if n.endswith(".py") and n != "__init__.py" and (d / n).is_file())
            continue
        # flyte's own ignores (its standard patterns; git's verdict in a repository)
        fs = files_mod.walk(cfg.root, start=rel, suffixes=(".py",), dir_mtimes=dirs, flyte_semantics=True)
        # as `flyte deploy --recursive`: package __init__.py files are not
        # candidates of their own (they run when a module below them loads;
        # a root that is itself a package has no name for its own)
        candidates.update(f for f in fs.files if f.rsplit("/", 1)[-1] != "__init__.py")
        ignore_files.update(fs.ignore_files)
    fresh = time.time_ns() - int(RACY_SECONDS * 1e9)
    return _Tree(sorted(candidates), {d: (m if m < fresh else None) for d, m in dirs.items()}, sorted(ignore_files))


def _tree_unchanged(root: Path, dirs: dict) -> bool:
    for rel, mtime in dirs.items():
        if mtime is None:
            return False
        try:
            if os.stat(os.path.join(root, rel) if rel else root).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True


def discover(cfg: Config, sel: Selection, store: LocalStore, digests: FileDigests, use_cache: bool = True,
             shared=None, stats=None, flyte_ref=None, warm=None) -> Discovery:
    """`shared` (a `shared_cache.SharedCache`, with the run's `stats`): results
    are looked up there by content before any user module is imported, and
    fresh ones published (see `shared_discovery`). `flyte_ref`: flyte's config
    file (default: found as `flyte` finds it from here); its digest keys the
    result, and the child reads it with flyte's loader, so a no-op imports neither."""
    from .. import flyte_config

    flyte_ref = flyte_ref or flyte_config.locate(cfg.flyte_config)
    cfg = replace(cfg, flyte_config=flyte_ref.path)
    result, dirs, candidates = _discover(cfg, sel, store, digests, use_cache, shared, stats, flyte_ref, warm)
    # the candidates go with the result: serialization imports the same ones (one loaded state)
    return replace(result, walked_dirs=tuple(sorted(dirs)), candidates=tuple(candidates))


def _shared_key(cfg: Config, settings: dict, tree: _Tree, digests: FileDigests) -> str:
    from ..stores import shared_discovery

    def digest_or_none(rel):
        try:
            return digests.digest(cfg.root / rel)[0]
        except OSError:
            return None

    # git's index decides which files count as ignored, but its bytes hold this
    # checkout's stat data: another clone of the same commit differs there alone.
    # What it decides is in the key already (the candidates and their digests).
    portable_ignores = [r for r in tree.ignore_files if not r.startswith(".git/")]
    return shared_discovery.key(settings, {r: digest_or_none(r) for r in tree.candidates},
                                {r: digest_or_none(r) for r in portable_ignores})


@dataclass(frozen=True)
class _Job:
    """One discovery's settings and where its result is kept."""

    cfg: Config
    sel: Selection
    mode: str
    targets: list[str]
    settings: dict
    store: LocalStore
    rel_path: str  # the local entry, under the key of `settings`
    digests: FileDigests
    shared: object
    stats: object
    warm: object = None  # a warm.WarmDiscovery: it gives what a discovery child would


def _discover(cfg: Config, sel: Selection, store: LocalStore, digests: FileDigests, use_cache: bool,
              shared, stats, flyte_ref, warm=None) -> tuple[Discovery, dict, list[str]]:
    mode, targets = _plan(cfg, sel)
    settings = _settings(cfg, sel, mode, targets, digests, flyte_ref, store)
    job = _Job(cfg, sel, mode, targets, settings, store, f"discovery/{key_of(settings)}.json", digests, shared, stats, warm)
    entry, tree = _local_entry(job, use_cache)
    if entry:
        done, tree = _from_entry(job, entry, tree)
        if done is not None:
            return done
    elif use_cache and shared is not None:
        tree = tree or _walk(cfg, mode, targets)
        hit = _from_shared(cfg, settings, tree, store, job.rel_path, digests, shared, stats)
        if hit is not None:
            return hit, tree.dirs, tree.candidates
    return _full(job, tree or _walk(cfg, mode, targets))


def _settings(cfg: Config, sel: Selection, mode: str, targets: list[str], digests: FileDigests, flyte_ref,
              store: LocalStore) -> dict:
    """What keys the local entry: everything besides the files that decides the result."""
    python = interpreter.of(cfg, store.root)  # the project's: it imports the modules
    return {
        "format": FORMAT,
        "tool": __version__,
        "python": list(python.python[:3]),
        "executable": python.path,
        "flyte": digests.digest(python.flyte_marker)[0],
        "root": str(cfg.root),
        "mode": mode,
        "targets": targets,
        "variable": sel.variable,
        "all": sel.all,
        "project": cfg.project,
        "domain": cfg.domain,
        "flyte_config": flyte_ref.fingerprint(),
        "source_roots": list(cfg.source_roots),
        "ignore_load_errors": cfg.ignore_load_errors,
    }


def _local_entry(job: _Job, use_cache: bool) -> tuple[dict | None, _Tree | None]:
    """(the local entry if its candidates and reads still hold, the walk made to tell)."""
    cfg, digests = job.cfg, job.digests
    entry = job.store.read_json(job.rel_path) if use_cache else None
    if entry is not None and not _well_formed(entry):
        entry = None  # not what _record writes (hand-edited, another version): discover afresh
    # The candidate modules are the same if no directory the last walk listed
    # has changed (an added, removed or renamed file changes its directory's
    # mtime) and no ignore file changed; only then is the walk skipped.
    tree = None
    if entry and not (_tree_unchanged(cfg.root, entry.get("dirs", {})) and _still_valid(cfg.root, entry.get("ignores", {}), digests)):
        tree = _walk(cfg, job.mode, job.targets)
        if tree.candidates != entry.get("candidates"):
            entry = None
    if entry and not discovery_reads.still_valid(entry.get("reads", {}), cfg.root, digests):
        # a data file, directory or variable a module read at import changed: import afresh
        tree, entry = tree or _walk(cfg, job.mode, job.targets), None
    return entry, tree


def _from_entry(job: _Job, entry: dict, tree: _Tree | None) -> tuple[tuple | None, _Tree]:
    """(the result when the entry, the shared cache or an incremental discovery
    gives it, else None; the tree a full discovery then uses)."""
    cfg, digests, store, rel_path = job.cfg, job.digests, job.store, job.rel_path
    changed = _changed(cfg.root, entry.get("files", {}), digests)
    if not changed:
        if tree is not None:  # same modules, newly stamped directories: skip the walk next time
            _record(store, rel_path, cfg, tree, entry["files"], entry["result"], _book_of(entry), digests, entry.get("reads"))
        return (_checked(Discovery.from_json(entry["result"], cached=True), entry["result"], cfg),
                (tree.dirs if tree else entry.get("dirs", {})), list(entry["candidates"])), tree
    tree = tree or _Tree(list(entry["candidates"]), dict(entry.get("dirs", {})), sorted(entry.get("ignores", {})))
    # the child's code prints are compared with what this Python compiles: only the same Python's
    cut = _code_unchanged(cfg, entry, changed, digests) if _same_python(cfg) else None
    if cut is not None:
        # every edit left the compiled code as it was: importing again would define the same
        book = _book_of(entry)
        _record(store, rel_path, cfg, tree, cut, entry["result"], book, digests, entry.get("reads"))
        shared_key, carried = _to_shared(cfg, job.settings, tree, cut, entry["result"], book, digests, job.shared, job.stats)
        result = _checked(Discovery.from_json(entry["result"], cached=True, how="cutoff"), entry["result"], cfg)
        return (replace(result, content_key=shared_key, carried_imports=carried), tree.dirs, tree.candidates), tree
    # another machine may have discovered this very tree: cheaper than any import
    if job.shared is not None:
        hit = _from_shared(cfg, job.settings, tree, store, rel_path, digests, job.shared, job.stats)
        if hit is not None:
            return (hit, tree.dirs, tree.candidates), tree
    # the same candidates, some files edited: re-import only what they affect
    if job.mode == "recursive" and entry.get("incremental") and job.warm is None:
        memo = _code_memo(job)
        got = _incremental(cfg, job.targets, job.sel, tree.candidates, entry, changed, digests, memo)
        if got is not None:
            raw, book = got
            # the modules reused read what they read last time: keep those witnesses too
            _witness(cfg, raw, digests, entry.get("reads"))
            return _finish(job, tree, raw, book, "incremental", memo), tree
    return None, tree


def _full(job: _Job, tree: _Tree) -> tuple[Discovery, dict, list[str]]:
    cfg, digests = job.cfg, job.digests
    memo = _code_memo(job)
    # the parent compiles the modules for the child only when its Python is the child's (marshal data)
    handed = sorted(tree.candidates + _package_inits(cfg.root, tree.candidates))  # in the order the child imports them
    handing = _handing(cfg, handed, digests, memo)
    raw, how = None, "full"
    if job.warm is not None:  # a fork of the warm child, or a new warm child (a cold discovery that stays)
        request = _request(cfg, job.mode, job.targets, tree.candidates, job.sel)
        raw, how = job.warm.run(cfg, request, key_of(job.settings), digests, handing)
    if raw is None:
        raw = _run_child(cfg, job.mode, job.targets, tree.candidates, job.sel, handing)
    _witness(cfg, raw, digests)
    book = _split(raw)
    done = _finish(job, tree, raw, book, how, memo)
    if job.warm is not None:
        done = (replace(done[0], note=job.warm.why or ""), *done[1:])
    return done


def _same_python(cfg: Config) -> bool:
    """Whether the project's interpreter is this Python's version (compiled code is exchangeable)."""
    return tuple(interpreter.of(cfg, None).python[:2]) == tuple(sys.version_info[:2])


def _code_memo(job: _Job):
    """The code compiled for this project's child by earlier runs (`code_memo`);
    None when the child's Python is another version (no code is handed over)."""
    if not _same_python(job.cfg):
        return None
    from . import code_memo

    return code_memo.CodeMemo(code_memo.path_for(job.store.root / "state", job.cfg.root))


def _handing(cfg: Config, files: list[str], digests: FileDigests, memo):
    """What the parent does while the child imports: hand it the code of `files`
    (from the memo, else compiled); None without a memo (another Python)."""
    from . import code as discovery_code

    if memo is None:
        return None
    return lambda request: discovery_code.prefetch(cfg.root, files, digests, request["handed"], request["progress"], memo)


def _package_inits(root: Path, files: list[str]) -> list[str]:
    """The `__init__.py` of every directory above `files` (which the child runs too)."""
    dirs = set()
    for f in files:
        while "/" in f:
            f = f.rsplit("/", 1)[0]
            if f in dirs:
                break
            dirs.add(f)
    return [f"{d}/__init__.py" for d in sorted(dirs) if os.path.isfile(os.path.join(root, d, "__init__.py"))]


def _finish(job: _Job, tree: _Tree, raw: dict, book: dict, how: str, memo=None) -> tuple[Discovery, dict, list[str]]:
    """Check a fresh result, keep it locally and offer it to the shared cache."""
    cfg, digests = job.cfg, job.digests
    result = _checked(Discovery.from_json(raw, how=how), raw, cfg)
    files = _digests_of(cfg, tree.candidates, raw, digests)
    if memo is not None:
        memo.save(files)
    _record(job.store, job.rel_path, cfg, tree, files, raw, book, digests)
    shared_key, carried = _to_shared(cfg, job.settings, tree, files, raw, book, digests, job.shared, job.stats)
    return replace(result, content_key=shared_key, carried_imports=carried), tree.dirs, tree.candidates


def _from_shared(cfg, settings, tree, store, rel_path, digests, shared, stats) -> Discovery | None:
    """A verified result from the shared cache, kept locally too; None on a miss."""
    from ..stores import shared_discovery

    content_key = _shared_key(cfg, settings, tree, digests)
    doc = shared_discovery.fetch(shared, stats, content_key, cfg.root, digests)
    if doc is None:
        return None
    raw = doc["result"]  # its witnesses hold here (checked by `fetch`)
    book = {"graph": _unpack(doc["book"].get("graph")), "all_envs": doc["book"].get("all_envs"),
            "incremental": bool(doc["book"].get("incremental"))}
    try:
        result = Discovery.from_json(raw, cached=True, how="shared")
    except (KeyError, TypeError, ValueError):
        shared.refuse_document(shared_discovery.rel_of(content_key), "unreadable discovery result", stats)
        return None
    carried = carried_imports.verified(doc.get("imports"), cfg.root, _search_roots(cfg, raw))
    result = replace(_checked(result, raw, cfg), content_key=content_key, carried_imports=carried)
    _record(store, rel_path, cfg, tree, doc["files"], raw, book, digests)
    return result


def _well_formed(entry) -> bool:
    """A cached discovery entry of the shape `_record` writes; anything else is
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


def _witness(cfg: Config, raw: dict, digests: FileDigests, old: dict | None = None) -> None:
    """Turn the child's record of what it read into witnesses (`raw["reads_witness"]`:
    checked before a cached or shared result is used) and their key
    (`raw["witness"]`, part of the result: the serialization key includes it)."""
    reads = raw.pop("reads", None) or {}
    skip = set(raw.get("loaded_files", ())) | set(raw.get("requested", ()))
    w = discovery_reads.witnesses(reads, cfg.root, digests, skip)
    for k, v in (old or {}).items():
        w[k] = {**v, **w.get(k, {})}
    raw["reads_witness"] = w
    raw["witness"] = key_of(w)


def _to_shared(cfg, settings, tree, files, raw, book, digests, shared, stats) -> tuple[str, dict]:
    """Publish a clean result; (its content key, "" when it does not travel;
    the resolved imports it carries, as `carried_imports.verified` gives them,
    so this run's closures need not resolve them again)."""
    if shared is None or raw.get("failures") or raw.get("problems") or raw.get("duplicates"):
        return "", {}  # only clean results travel: a load failure may be this machine's own
    from ..stores import shared_discovery

    packed = {**book, "graph": _pack(book.get("graph"))} if book.get("incremental") else {"incremental": False}
    content_key = _shared_key(cfg, settings, tree, digests)
    roots = _search_roots(cfg, raw)
    carried = shared_discovery.publish(shared, stats, content_key, files, raw, packed, digests, cfg.root, roots)
    return content_key, (carried_imports.verified(carried, cfg.root, roots) if carried else {})


def _search_roots(cfg: Config, raw: dict) -> list[Path]:
    return imports.search_roots(cfg.root, cfg.source_roots, raw.get("sys_path", ()))


def _digests_of(cfg: Config, candidates: list[str], raw: dict, digests: FileDigests) -> dict:
    """The digest of every file a result was read from (None: missing)."""
    read = set(candidates) | {f for f in raw.get("loaded_files", ()) if not os.path.isabs(f)}
    file_digests = {}
    for rel in sorted(read):
        try:
            file_digests[rel] = digests.digest(cfg.root / rel)[0]
        except OSError:
            file_digests[rel] = None
    return file_digests


def _split(raw: dict) -> dict:
    """Take the child's bookkeeping for incremental discovery out of its result."""
    graph = raw.pop("graph", None)
    all_envs = raw.pop("all_envs", None)
    code = raw.pop("code", None)
    ok = bool(raw.pop("incremental_ok", False)) and graph is not None and all_envs is not None
    # a result with load failures (kept with --ignore-load-errors) is never
    # patched: which module fails first depends on the order of the imports
    ok = ok and not raw.get("failures") and not raw.get("problems") and not raw.get("duplicates")
    return {"graph": graph, "all_envs": all_envs, "incremental": ok, "code": code if isinstance(code, dict) else {}}


def _book_of(entry: dict) -> dict:
    return {"graph": _unpack(entry.get("graph")), "all_envs": entry.get("all_envs"), "incremental": bool(entry.get("incremental")),
            "code": entry.get("code") or {}}


def _pack(graph: dict | None) -> dict | None:
    """The import graph as indices into its sorted files: half the bytes a
    no-op run reads back."""
    if graph is None:
        return None
    files = sorted(set(graph) | {t for ts in graph.values() for t in ts})
    index = {f: i for i, f in enumerate(files)}
    return {"files": files, "edges": [sorted(index[t] for t in graph.get(f, ())) for f in files]}


def _unpack(packed: dict | None) -> dict | None:
    if not isinstance(packed, dict) or "files" not in packed:
        return None
    files = packed["files"]
    return {f: [files[i] for i in ts] for f, ts in zip(files, packed["edges"])}


def _record(store: LocalStore, rel_path: str, cfg: Config, tree: _Tree, file_digests: dict, raw: dict, book: dict,
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
            **({**book, "graph": _pack(book["graph"])} if book.get("incremental") else {"incremental": False}),
        })
    except OSError:
        pass


def _still_valid(root: Path, recorded: dict, digests: FileDigests) -> bool:
    join = files_mod.joiner(root)
    for rel, hex_ in recorded.items():
        try:
            if digests.digest(join(rel))[0] != hex_:
                return False
        except OSError:
            if hex_ is not None:
                return False
    return True


def _changed(root: Path, recorded: dict, digests: FileDigests) -> list[str]:
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


def _env_key(d: dict):
    return (d["name"], d["file"], d["module"], d.get("variable") or "")


def _incremental(cfg: Config, targets: list[str], sel: Selection, candidates: list[str], entry: dict,
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
    plan = _incremental_plan(cfg, candidates, entry, changed, digests)
    if plan is None:
        return None
    # the child imports what the modules to redo imported last time: their code is handed over
    # (the memo's; the changed files compiled now)
    again = sorted(f for f in reachable(plan.redo, plan.graph_old) if f.endswith(".py") and not os.path.isabs(f))
    raw = _run_child(cfg, "recursive", targets, sorted(plan.redo), sel, _handing(cfg, again, digests, memo))
    book = _split(raw)
    if not book["incremental"] or sorted(raw.get("sys_path", ())) != sorted(plan.old.get("sys_path", ())):
        return None
    return _merge(plan, raw, book)


@dataclass(frozen=True)
class _Plan:
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


def _incremental_plan(cfg: Config, candidates: list[str], entry: dict, changed: list[str],
                      digests: FileDigests) -> _Plan | None:
    from ..engine.import_edges import import_records

    old = entry["result"]
    graph_old, all_old = _unpack(entry.get("graph")), entry.get("all_envs")
    if not graph_old or all_old is None or old.get("failures"):
        return None
    cands = set(candidates)
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
    return _Plan(old, graph_old, all_old, cands, importers_of, env_files, redo, entry.get("code") or {})


def _merge(plan: _Plan, raw: dict, book: dict) -> tuple[dict, dict] | None:
    """The child's result for the modules imported again, merged with the
    cached one for the rest; None when the merge cannot be vouched for."""
    fresh = set(raw["loaded_files"])  # every module imported (so run afresh) in this run
    new_env_files = {f for _, f in book["all_envs"]}
    # the modules that could have touched a fresh environment all ran again
    for f in fresh & (plan.env_files | new_env_files):
        if not (reachable([f], plan.importers_of) & plan.cands) <= fresh:
            return None

    graph = {f: v for f, v in plan.graph_old.items() if f not in fresh}
    graph.update(book["graph"])
    old_loaded = set(plan.old.get("loaded_files", ()))
    roots = {c for c in plan.cands if c in fresh or (c not in plan.redo and c in old_loaded)}
    loaded = reachable(roots, graph)
    if not fresh <= loaded:
        return None

    def reused(file: str) -> bool:
        return file not in fresh and file in loaded

    all_envs = [x for x in plan.all_old if reused(x[1])] + book["all_envs"]
    if len({name for name, _ in all_envs}) != len(all_envs):
        return None  # the same name in two files: the full discovery names both
    pool: dict[str, dict] = {}
    for e in [e for e in plan.old["envs"] if reused(e["file"])] + raw["envs"]:
        if e["name"] in pool:
            return None
        pool[e["name"]] = e
    chosen = _reselect(pool)
    if chosen is None:
        return None
    merged = dict(raw)
    merged["envs"] = sorted(chosen.values(), key=_env_key)
    merged["loaded_files"] = sorted(loaded)
    merged["requested"] = sorted(plan.redo)
    code = {f: v for f, v in plan.code_old.items() if reused(f)}
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


def _code_unchanged(cfg: Config, entry: dict, changed: list[str], digests: FileDigests) -> dict | None:
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


def _request(cfg: Config, mode: str, targets: list[str], candidates: list[str], sel: Selection) -> dict:
    return {
        "root": str(cfg.root),
        "mode": mode,
        "targets": targets,
        "variable": sel.variable,
        "all": sel.all,
        "files": candidates,
        "project": cfg.project,
        "domain": cfg.domain,
        "flyte_config": cfg.flyte_config,
        "source_roots": list(cfg.source_roots),
        "ignore_load_errors": cfg.ignore_load_errors,
    }


def _run_child(cfg: Config, mode: str, targets: list[str], candidates: list[str], sel: Selection, while_waiting=None) -> dict:
    """The child's result; `while_waiting(request)` runs meanwhile."""
    from ..processes import children

    request = _request(cfg, mode, targets, candidates, sel)
    with tempfile.TemporaryDirectory(prefix="flyte-build-discover-") as tmp:
        req_path = os.path.join(tmp, "request.json")
        res_path = os.path.join(tmp, "result.json")
        progress = request["progress"] = os.path.join(tmp, "progress")
        if while_waiting is not None:  # it compiles the candidates for the child (discovery_code)
            request["handed"] = os.path.join(tmp, "code")
            open(request["handed"], "wb").close()
        Path(req_path).write_text(json.dumps(request))
        lib = children.stage_package(tmp)
        # the child's output goes to a file, not a pipe: we do other work while
        # it runs, and a chatty module must not block on a full pipe meanwhile
        python = interpreter.of(cfg, None).path  # probed already (`_settings`)
        cmd = children.command(python, lib, children.own_script(lib, "discovery/child.py"), req_path, res_path)
        children.run(cmd, str(cfg.root), children.child_environ(),
                     timeout_of(cfg), "discovery", tmp, progress, res_path,
                     (lambda: while_waiting(request)) if while_waiting is not None else None)
        return json.loads(Path(res_path).read_text())


def timeout_of(cfg) -> float:
    return getattr(cfg, "discovery_timeout", None) or DEFAULT_TIMEOUT


def _checked(result: Discovery, raw: dict, cfg: Config) -> Discovery:
    for problem in raw.get("problems", []):
        raise UserError(problem)
    if result.failures and not cfg.ignore_load_errors:
        lines = [f"  {f.message}" for f in result.failures]
        if any("ModuleNotFoundError" in f.message for f in result.failures):
            lines.append(interpreter.missing_module_hint(interpreter.of(cfg, None)))
        raise UserError("cannot load the environments:\n" + "\n".join(lines) + "\n(--ignore-load-errors, -i, goes on without them)")
    dups = raw.get("duplicates", [])
    if dups:
        d = dups[0]
        # one file imported under two module names says so (the child names both and the fix)
        raise UserError(d.get("message") or f"two environments are named `{d['name']}`: in {' and '.join(d['files'])}")
    return result
