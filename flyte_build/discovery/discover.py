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
module it did not load are reused (see `incremental`). Anything it cannot
vouch for falls back to a full discovery.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import carried_imports, child_run, distributions, entries, imports, incremental
from . import reads as discovery_reads
from ..config import interpreter
from ..archives import bundle_files as files_mod
from ..__about__ import __version__
from ..config.settings import Config
from ..errors import UserError
from ..hashing import key_of
from ..model import Discovery
from ..stores.file_digests import RACY_SECONDS, FileDigests
from ..stores.local_store import LocalStore

FORMAT = 10  # 6: AppEnvironments are discovered too (EnvSpec.kind); 7: what modules read (discovery_reads); 8: EnvSpec.loaded, flyte's selection; 9: the package __init__.py above every file read, present or not (entries.digests_of); 10: what is installed where the modules import from (settings `installed`, result `distributions`)


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


def _scope(cfg: Config, sel: Selection) -> tuple[str, list[str]]:
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


def _relisted(job, entry: dict) -> _Tree | None:
    """The entry's candidates, with new directory mtimes, when relisting the
    directories that changed shows the walk would find them again (`relisting`)."""
    if job.mode != "recursive" or not entries.still_valid(job.cfg.root, entry.get("ignores", {}), job.digests):
        return None
    from .relisting import relisted

    ignores = sorted(entry.get("ignores", {}))
    dirs = relisted(job.cfg.root, entry.get("dirs", {}), entry["candidates"], ignores,
                    time.time_ns() - int(RACY_SECONDS * 1e9))
    return None if dirs is None else _Tree(list(entry["candidates"]), dirs, ignores)


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
    mode, targets = _scope(cfg, sel)
    early = _walked_early(cfg, mode, targets, digests) if interpreter.under_way(cfg) else None
    settings = _settings(cfg, sel, mode, targets, digests, flyte_ref, store)
    job = _Job(cfg, sel, mode, targets, settings, store, f"discovery/{key_of(settings)}.json", digests, shared, stats, warm)
    entry, tree = _local_entry(job, use_cache)
    if entry:
        done, tree = _from_entry(job, entry, tree)
        if done is not None:
            return _warm_later(job, done)
    elif use_cache and shared is not None:
        tree = tree or early or _walk(cfg, mode, targets)
        hit = _from_shared(cfg, settings, tree, store, job.rel_path, digests, shared, stats)
        if hit is not None:
            return _warm_later(job, (hit, tree.dirs, tree.candidates))
    return _full(job, tree or early or _walk(cfg, mode, targets))


def _walked_early(cfg: Config, mode: str, targets: list[str], digests: FileDigests) -> _Tree:
    """The walk and the candidates' digests, made while the project's interpreter
    is still being asked (`interpreter.ask_ahead`: a machine that has not asked
    it before, which has no local entry under its answer either): neither
    depends on the answer, and every later step of this run takes them."""
    tree = _walk(cfg, mode, targets)
    for rel in tree.candidates:
        try:
            digests.digest(cfg.root / rel)
        except OSError:
            pass  # `_shared_key` and the discovery meet it again
    return tree


def _warm_later(job: _Job, done: tuple) -> tuple:
    """`done` (the cache's answer: no child ran); a resident process's warm child
    starts in the background meanwhile, so that the next edit finds it warm."""
    # not for a tree inside the cache (`affected`'s exported revision, removed after the run)
    inside = os.path.realpath(job.cfg.root).startswith(os.path.realpath(job.store.root) + os.sep)
    if job.warm is not None and not inside:
        request = child_run.child_request(job.cfg, job.mode, job.targets, list(done[2]), job.sel)
        job.warm.prestart(job.cfg, request, key_of(job.settings), job.digests)
    return done


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
        # by name and version (where they sit differs between machines, as `executable` does):
        # another machine shares this result only with the same distributions installed
        "distributions": python.distributions,
        "installed": python.installed,
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
    if entry is not None and not entries.well_formed(entry):
        entry = None  # not what entries.record writes (hand-edited, another version): discover afresh
    # The candidate modules are the same if no directory the last walk listed
    # has changed (an added, removed or renamed file changes its directory's
    # mtime) and no ignore file changed; only then is the walk skipped. With
    # the same ignore files, relisting the changed directories may tell too.
    tree = None
    if entry and not (_tree_unchanged(cfg.root, entry.get("dirs", {})) and entries.still_valid(cfg.root, entry.get("ignores", {}), digests)):
        tree = _relisted(job, entry) or _walk(cfg, job.mode, job.targets)
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
    changed = entries.changed(cfg.root, entry.get("files", {}), digests)
    if not changed:
        if tree is not None:  # same modules, newly stamped directories: skip the walk next time
            entries.record(store, rel_path, cfg, tree, entry["files"], entry["result"], entries.book_of(entry), digests, entry.get("reads"))
        return (_checked(Discovery.from_json(entry["result"], cached=True), entry["result"], cfg),
                (tree.dirs if tree else entry.get("dirs", {})), list(entry["candidates"])), tree
    tree = tree or _Tree(list(entry["candidates"]), dict(entry.get("dirs", {})), sorted(entry.get("ignores", {})))
    # the child's code prints are compared with what this Python compiles: only the same Python's
    cut = incremental.code_unchanged(cfg, entry, changed, digests) if _same_python(cfg) else None
    if cut is not None:
        # every edit left the compiled code as it was: importing again would define the same
        book = entries.book_of(entry)
        entries.record(store, rel_path, cfg, tree, cut, entry["result"], book, digests, entry.get("reads"))
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
        got = incremental.incremental(cfg, job.targets, job.sel, tree.candidates, entry, changed, digests, memo)
        if got is not None:
            raw, book = got
            # the modules reused read what they read last time: keep those witnesses too
            _witness(cfg, raw, digests, entry.get("reads"))
            # and imported what they imported
            raw["distributions"] = sorted(set(raw.get("distributions") or ()) | set(entry["result"].get("distributions") or ()))
            return _finish(job, tree, raw, book, "incremental", memo), tree
    return None, tree


def _full(job: _Job, tree: _Tree) -> tuple[Discovery, dict, list[str]]:
    cfg, digests = job.cfg, job.digests
    memo = _code_memo(job)
    # the parent compiles the modules for the child only when its Python is the child's (marshal data)
    handed = sorted(tree.candidates + _package_inits(cfg.root, tree.candidates))  # in the order the child imports them
    handing = child_run.handing(cfg, handed, digests, memo)
    raw, how = None, "full"
    if job.warm is not None:  # a fork of the warm child, or a new warm child (a cold discovery that stays)
        request = child_run.child_request(cfg, job.mode, job.targets, tree.candidates, job.sel)
        raw, how = job.warm.run(cfg, request, key_of(job.settings), digests, handing)
    ahead: dict = {}
    if raw is None:
        raw = child_run.run_child(cfg, job.mode, job.targets, tree.candidates, job.sel,
                                  child_run.meanwhile(cfg, handed, digests, handing, ahead))
    _witness(cfg, raw, digests)
    book = entries.split(raw)
    done = _finish(job, tree, raw, book, how, memo, ahead)
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

    # a tree inside the cache (`affected`'s exported revision) is removed after the run: keep nothing for it
    inside = os.path.realpath(job.cfg.root).startswith(os.path.realpath(job.store.root) + os.sep)
    return code_memo.CodeMemo(None if inside else code_memo.path_for(job.store.root / "state", job.cfg.root))


def _package_inits(root: Path, files: list[str]) -> list[str]:
    """The `__init__.py` of every directory above `files` (which the child runs too)."""
    return sorted(f for f in entries.package_inits(files) if os.path.isfile(os.path.join(root, f)))


def _finish(job: _Job, tree: _Tree, raw: dict, book: dict, how: str, memo=None,
            ahead: dict | None = None) -> tuple[Discovery, dict, list[str]]:
    """Check a fresh result, keep it locally and offer it to the shared cache;
    `ahead`: imports resolved while the child ran (`window`), for the closures."""
    cfg, digests = job.cfg, job.digests
    result = _checked(Discovery.from_json(raw, how=how), raw, cfg)
    files = entries.digests_of(cfg, tree.candidates, raw, digests)
    if memo is not None:
        memo.save(files)
    entries.record(job.store, job.rel_path, cfg, tree, files, raw, book, digests)
    shared_key, carried = _to_shared(cfg, job.settings, tree, files, raw, book, digests, job.shared, job.stats)
    return replace(result, content_key=shared_key, carried_imports=carried or ahead or {}), tree.dirs, tree.candidates


def _from_shared(cfg, settings, tree, store, rel_path, digests, shared, stats) -> Discovery | None:
    """A verified result from the shared cache, kept locally too; None on a miss."""
    from ..stores import shared_discovery

    content_key = _shared_key(cfg, settings, tree, digests)
    doc = shared_discovery.fetch(shared, stats, content_key, cfg.root, digests)
    if doc is None:
        return None
    raw = doc["result"]  # its witnesses hold here (checked by `fetch`)
    if not distributions.installed_here(raw.get("distributions", []), interpreter.of(cfg, store.root).distributions):
        return None  # discovered where other versions of what the modules import are installed
    book = {"graph": entries.unpack(doc["book"].get("graph")), "all_envs": doc["book"].get("all_envs"),
            "incremental": bool(doc["book"].get("incremental"))}
    try:
        result = Discovery.from_json(raw, cached=True, how="shared")
    except (KeyError, TypeError, ValueError):
        shared.refuse_document(shared_discovery.rel_of(content_key), "unreadable discovery result", stats)
        return None
    carried = carried_imports.verified(doc.get("imports"), cfg.root, _search_roots(cfg, raw), doc["files"])
    result = replace(_checked(result, raw, cfg), content_key=content_key, carried_imports=carried)
    entries.record(store, rel_path, cfg, tree, doc["files"], raw, book, digests)
    return result


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

    packed = {**book, "graph": entries.pack(book.get("graph"))} if book.get("incremental") else {"incremental": False}
    content_key = _shared_key(cfg, settings, tree, digests)
    roots = _search_roots(cfg, raw)
    carried = shared_discovery.publish(shared, stats, content_key, files, raw, packed, digests, cfg.root, roots)
    return content_key, (carried_imports.verified(carried, cfg.root, roots, files) if carried else {})


def _search_roots(cfg: Config, raw: dict) -> list[Path]:
    return imports.search_roots(cfg.root, cfg.source_roots, raw.get("sys_path", ()))


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
