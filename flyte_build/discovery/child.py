"""Discovery's child process: import the user's modules, return plain data.

Run by path (`children.command`) with REQUEST.json RESULT.json. User
code runs here and only here, so whatever it prints, patches or leaves behind
dies with this process; the parent reads the result file, never our stdout.

Besides the environments, the child records what incremental discovery
needs (see `incremental`): which user files each user module's
load imported (`graph`), every environment created (`all_envs`), and whether
the run had nothing order-dependent in it (`incremental_ok`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from flyte_build import atomic
from flyte_build.processes import children
from flyte_build.discovery.code import Handed
from flyte_build.discovery import child_envs, distributions
from flyte_build.discovery.code_prints import CodePrints
from flyte_build.discovery.recorder import ReadRecorder, ignored_prefixes, write_progress


def module_name(rel: str, search_roots: list[str], root: str) -> str:
    """The module name flyte gives a file: its path under the deepest search
    root holding it (the root itself unless source roots are set), as
    `flyte deploy --recursive` names it under `--root-dir`."""
    abs_path = os.path.join(root, rel)
    best = root
    for sr in search_roots:
        if abs_path.startswith(sr.rstrip("/") + "/") and len(sr) > len(best):
            best = sr
    parts = Path(os.path.relpath(abs_path, best)).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _user_frame(exc: BaseException, root: str) -> str:
    """file:line of the innermost frame of the user's code in the traceback."""
    where = ""
    for fs in traceback.extract_tb(exc.__traceback__):
        if fs.filename.startswith(children.OWN_DIR + "/"):
            continue  # ours, even when flyte-build's own repository is the root
        if os.path.realpath(fs.filename).startswith(root.rstrip("/") + "/"):
            where = f"{child_envs.relative(fs.filename, root)}:{fs.lineno}"
    return where


class _ImportTracker:
    """Who imported what while the user's modules loaded.

    Every `import` statement calls `builtins.__import__`, even for a module
    that is already in `sys.modules`, and so does `__import__("x")`;
    `importlib.import_module` is wrapped too. Each call is charged to the
    innermost *module body* of a user file on the stack: a module's own
    top-level imports, and also the imports done by a library function it
    calls at import time (`L.f()` importing `Z` lazily is a dependency of the
    module whose load ran it, not of `L`). So a module's load depends on
    exactly the files reachable from it in this graph.

    Why not the alternatives: a `sys.modules` before/after diff per candidate
    charges a shared module only to the first candidate that loaded it (the
    next one importing it would miss the dependency: unsound); the parsed
    import closure (`imports.py`) cannot see `import_module(name_in_a_variable)`
    (unsound) and counts imports that never run at import time (imprecise).
    A loaded user file the graph does not explain (loaded by a thread, or by
    library code with no user module body on the stack) makes the run
    `incremental_ok: false`, and the parent then never reuses it incrementally.
    """

    def __init__(self, root: str):
        self.prefixes = tuple({root.rstrip("/") + "/", os.path.abspath(root).rstrip("/") + "/"})
        self.events: list[tuple] = []  # (owner __file__ or None, name, level, package, fromlist)
        # the warm child's: {owner: its edges} under the module maps they were found with
        # (set memo = {} to keep them); its forks reuse the kept owners' (see `edges`)
        self.memo: dict | None = None
        self.memo_maps: tuple | None = None
        self.dropped: frozenset = frozenset()
        self.fresh_from: int | None = None
        self._orig_import = None
        self._orig_import_module = None

    def _owner(self, frame):
        prefixes = self.prefixes
        while frame is not None:
            if frame.f_code.co_name == "<module>":
                f = frame.f_globals.get("__file__")
                if f and f.startswith(prefixes):
                    return f
            frame = frame.f_back
        return None

    def install(self) -> None:
        import builtins

        orig = self._orig_import = builtins.__import__
        orig_im = self._orig_import_module = importlib.import_module
        events = self.events
        owner = self._owner
        getframe = sys._getframe

        def tracked_import(name, globals=None, locals=None, fromlist=(), level=0):
            caller = getframe(1)
            package = None
            if level:
                package = (globals if globals is not None else caller.f_globals).get("__package__")
            events.append((owner(caller), name, level, package, fromlist))
            return orig(name, globals, locals, fromlist, level)

        def tracked_import_module(name, package=None):
            events.append((owner(getframe(1)), name, 0, package, None))
            return orig_im(name, package)

        builtins.__import__ = tracked_import
        importlib.import_module = tracked_import_module

    def uninstall(self) -> None:
        import builtins

        builtins.__import__ = self._orig_import
        importlib.import_module = self._orig_import_module

    def edges(self, file_by_name: dict[str, str], file_by_path: dict[str, str]) -> tuple[dict[str, set[str]], set[str]]:
        """({owner file: files it imported}, files imported with no user module
        body on the stack); the maps give the loaded user file (relative) of a
        module name and of a module's `__file__`."""
        out: dict[str, set[str]] = {}
        orphans: set[str] = set()

        def add(src: str | None, targets: frozenset) -> None:
            if not targets:
                return
            if src is None:
                orphans.update(targets)
            else:
                out.setdefault(src, set()).update(targets - {src})

        events = self.events
        memo = self._memo(file_by_name, file_by_path)
        if memo is not None:  # a warm child's fork: the kept owners' edges as the warm child found them
            for owner, (src, targets) in memo.items():
                if owner not in self.dropped:
                    add(src, targets)
            events = events[self.fresh_from:]
        by_owner = self._edges_by_owner(events, file_by_name, file_by_path)
        for src, targets in by_owner.values():
            add(src, targets)
        if self.memo is not None and self.memo_maps is None and all(o is None or o in file_by_path for o in by_owner):
            # the warm child's own discovery: kept for its forks (an owner charged through
            # its real path, outside the maps, depends on the file system: none kept then)
            self.memo, self.memo_maps = by_owner, (dict(file_by_name), dict(file_by_path))
        return out, orphans

    def _memo(self, file_by_name: dict[str, str], file_by_path: dict[str, str]) -> dict | None:
        """The warm child's edges by owner when this fork may use them: it dropped the
        events of the modules it runs again (`forget_owners`) and loaded the same
        modules under the same names (the maps equal: an event's answer is a
        function of the event and the maps only)."""
        if self.memo_maps is None or self.fresh_from is None:
            return None
        if self.memo_maps != (file_by_name, file_by_path):
            return None
        return self.memo

    def forget_owners(self, dropped: set) -> None:
        """A warm child's fork: the events of `dropped` (module files, as `__file__`)
        are gone from `events` and whatever is recorded from here on is new."""
        self.dropped = frozenset(dropped)
        self.fresh_from = len(self.events)

    @staticmethod
    def _edges_by_owner(events, file_by_name: dict[str, str], file_by_path: dict[str, str]) -> dict:
        """{owner `__file__` or None: (its user file or None, every loaded file its events name)}."""
        file_of = file_by_name.get

        @functools.lru_cache(maxsize=None)
        def src_of(path: str) -> str | None:
            hit = file_by_path.get(path)
            return hit if hit is not None else child_envs.file_of_path(path)

        seen: set = set()
        acc: dict = {}
        for event in events:
            try:  # the same import runs many times in one module body (a library's lazy import)
                if event in seen:
                    continue
                seen.add(event)
            except TypeError:  # a fromlist given as a list
                pass
            targets = _event_targets(event, file_of)
            if targets:
                owner = event[0]
                got = acc.get(owner)
                if got is None:
                    acc[owner] = got = (src_of(owner) if owner is not None else None, set())
                got[1].update(targets)
        return {o: (src, frozenset(t)) for o, (src, t) in acc.items()}


def _event_targets(event: tuple, file_of) -> frozenset:
    """The loaded user files an import event names (the module, its packages, `from` items)."""
    _owner, name, level, package, fromlist = event
    try:
        if level:
            absname = importlib.util.resolve_name("." * level + name, package)
        elif name.startswith(".") and package:
            absname = importlib.util.resolve_name(name, package)
        else:
            absname = name
    except (ImportError, ValueError, TypeError):
        return frozenset()
    if not absname:
        return frozenset()
    parts = absname.split(".")
    names = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for item in fromlist or ():
        if isinstance(item, str) and item != "*":
            names.append(f"{absname}.{item}")
    return frozenset(t for t in map(file_of, names) if t)


class BadFlyteConfig(Exception):
    """flyte's config file cannot be read: bad input, reported before any import."""


def prepare(req: dict, read_flyte_config: bool = True) -> tuple[str, list[str], dict]:
    """Set up this process as `flyte deploy` sets up its own: the root as the
    working directory, flyte initialised with the project and domain (which
    appends the root to sys.path), then the source roots after it. The entry
    Python put first (the working directory, for `python -m`) is dropped: the
    `flyte` command has its own bin directory there, not the root, and a
    second copy of the root would show in the tasks' `_F_SYS_PATH`.

    Discovery and task serialization both start here and then import the
    same candidate modules (`import_candidates`), so they see one loaded
    state: the same environments with the same tasks under the same names."""
    root = os.path.realpath(req["root"])
    search_roots = [os.path.realpath(os.path.join(root, s)) for s in req.get("source_roots", [])]
    os.chdir(root)
    if sys.path and os.path.realpath(sys.path[0] or ".") == root:
        del sys.path[0]
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != root]

    children.become_subreaper()  # what the user's modules start stays below this process
    children.die_with_parent(owner=req.get("owner"))
    from flyte_build import flyte_adapter as fa

    if read_flyte_config:
        try:
            flyte_cfg = fa.discovery_settings(req.get("flyte_config"))
        except ValueError as exc:  # flyte's config file is bad input: say so, import nothing
            raise BadFlyteConfig(str(exc)) from None
        # flyte.init appends the root to sys.path (after site-packages), as `flyte deploy` has it
        fa.init_for_discovery(
            Path(root), req.get("project") or flyte_cfg["project"]["value"], req.get("domain") or flyte_cfg["domain"]["value"],
            flyte_cfg["org"]["value"], flyte_cfg["image_refs"]["value"], flyte_cfg["image_registry"]["value"],
        )
    else:
        flyte_cfg = {}
        fa.init_for_discovery(Path(root), req.get("project"), req.get("domain"))
    if root not in sys.path:
        sys.path.append(root)
    for p in search_roots:
        if p not in sys.path:
            sys.path.append(p)
    distributions.mark_baseline()
    return root, search_roots, flyte_cfg


def import_candidates(files: list[str], search_roots: list[str], root: str, ignore_load_errors: bool,
                      import_module=importlib.import_module, progress=None) -> tuple[dict[str, str], list[dict]]:
    """Import each candidate file under its module name; ({rel file: module name}, failures)."""
    failures: list[dict] = []
    modules: dict[str, str] = {}  # rel file -> module name
    with _builtins_kept(), children.users_view():
        for rel in files:
            if _import_one(rel, search_roots, root, import_module, progress, modules, failures):
                break
            if failures and not ignore_load_errors:
                break
    return modules, failures


@contextlib.contextmanager
def _builtins_kept():
    """A module replacing `builtins.open` (or any builtin) at import changes
    nothing for the code that runs after the imports (ours, flyte's)."""
    import builtins

    saved = dict(vars(builtins))
    try:
        yield
    finally:
        for k, v in saved.items():
            if vars(builtins).get(k) is not v:
                setattr(builtins, k, v)


_NAMES: dict[tuple[str, str], str] = {}  # (candidate, root) -> module name (the search roots are the process's)


def _import_one(rel, search_roots, root, import_module, progress, modules, failures) -> bool:
    """Import one candidate, its failure noted; True when nothing after it can be imported."""
    name = _NAMES.get((rel, root))
    if name is None:  # once per file: a warm child's forks import the same candidates again
        name = _NAMES[(rel, root)] = module_name(rel, search_roots, root)
    modules[rel] = name
    write_progress(progress, name, rel)
    if not name:
        failures.append({"file": rel, "message": f"{rel}: the root's own __init__.py is not a module under the root; "
                                                 "select the files beside it (as `flyte deploy --recursive` does)"})
        return True
    try:
        import_module(name)
    except SyntaxError as exc:
        loc = f"{child_envs.relative(exc.filename, root)}:{exc.lineno}" if exc.filename else rel
        failures.append({"file": rel, "message": f"{loc}: SyntaxError: {exc.msg}"})
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything, SystemExit and KeyboardInterrupt included
        # (this process has its own session: a Ctrl-C at the terminal never reaches it, so
        # a KeyboardInterrupt here is the module's own raise, a failure like any other)
        where = _user_frame(exc, root)
        at = f" (at {where})" if where else ""
        failures.append(
            {"file": rel, "message": f"importing module {name} failed{at}: {type(exc).__name__}: {exc}{_hint(exc)}"}
        )
    return False


def _hint(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):  # e.g. a `__main__.py`: flyte deploy --recursive imports it too
        return (" (the module ends the program when imported; `flyte deploy --recursive` imports it too: "
                "run its program under `if __name__ == \"__main__\":`, or leave the file out)")
    return ""


def main(request_path: str, result_path: str) -> int:
    req = json.loads(Path(request_path).read_text())
    try:
        root, search_roots, flyte_cfg = prepare(req)
    except BadFlyteConfig as exc:
        atomic.write_bytes(result_path, json.dumps({"envs": [], "problems": [str(exc)]}).encode())
        return 0
    from flyte_build import flyte_adapter as fa

    run = import_recorded(req, os.path.dirname(os.path.abspath(request_path)), root, search_roots, fa)
    result = result_of(req, root, run, flyte_cfg, fa)
    # all or nothing: the parent takes a missing result file for a crash
    atomic.write_bytes(result_path, json.dumps(result, sort_keys=True).encode())
    return 0


@dataclass(frozen=True)
class Imported:
    """The candidates' imports and what was recorded while they ran."""

    modules: dict  # rel file -> module name
    failures: list
    made_by_failed: dict
    tracker: _ImportTracker
    prints: CodePrints
    reads: ReadRecorder


def import_recorded(req: dict, request_dir: str, root: str, search_roots: list[str], fa, reads=None, tracker=None,
                    prints=None, forked: bool = False) -> Imported:
    """Import the request's candidates, recording what they read, import and
    compile. The warm child's fork passes the recorders it carries over (their
    records of the modules it keeps, `forked`); a candidate it kept is imported
    already (importing it again is a lookup, without the bookkeeping)."""
    if reads is None:
        # from here on, what the user's modules read is part of the result's key (not the
        # request's directory); flyte's config is keyed by the parent (`flyte_config`)
        reads = ReadRecorder(ignored_prefixes((request_dir,)), root)
        reads.install()
    reads.active = True
    child_envs.set_root(root)
    noting, made_by_failed = _noting_envs_of_failed_imports(importlib.import_module, fa)
    import_module = (lambda name: sys.modules.get(name) or noting(name)) if forked else noting
    tracker = tracker or _ImportTracker(root)
    tracker.install()
    prints = prints or CodePrints(root, Handed(req.get("handed"), root))
    prints.install()
    try:
        modules, failures = import_candidates(req["files"], search_roots, root, bool(req.get("ignore_load_errors")),
                                              import_module, req.get("progress"))
    finally:
        prints.uninstall()
        tracker.uninstall()
        reads.stop()
    return Imported(modules, failures, made_by_failed, tracker, prints, reads)


def result_of(req: dict, root: str, run: Imported, flyte_cfg: dict, fa) -> dict:
    """The result (with the parent's bookkeeping) of the user modules now in
    sys.modules: the cold child's, and the warm child's fork's (`warm_child`)."""
    modules, failures, made_by_failed, tracker, prints, reads = (
        run.modules, run.failures, run.made_by_failed, run.tracker, run.prints, run.reads)
    loaded = child_envs.scan_loaded(root, fa)
    envs, failures = child_envs.drop_unloaded(fa.loaded_environments(load_apps=False), failures, made_by_failed, root, fa)
    selected, problems = child_envs.select(req, root, modules, envs, fa)
    graph, orphans = tracker.edges(loaded.file_by_name, loaded.file_by_path)
    graph = child_envs.with_package_parents(graph, loaded)
    all_envs, envs_stable = child_envs.all_envs(envs, loaded, root, fa)
    stable = loaded.stable and envs_stable and child_envs.explained(req["files"], graph, loaded.files, orphans)
    result = {
        "envs": child_envs.env_records(child_envs.with_dependencies(selected), loaded, graph, root, fa),
        "loaded_files": sorted(loaded.files),
        "sys_path": _local_sys_path(root),
        "failures": failures,
        "duplicates": child_envs.duplicates(envs, root, fa),
        "problems": problems,
        "flyte_version": fa.flyte_version(),
        "distributions": distributions.imported(),
        "version_warning": fa.check_version(),
        "requested": list(req["files"]),
        "flyte": flyte_cfg,
        # bookkeeping for incremental discovery (the parent keeps it out of the result)
        "graph": graph,
        "all_envs": sorted(all_envs),
        "incremental_ok": stable,
        "code": prints.by_file(root, reads.files),  # for the parent's early cutoff (incremental.code_unchanged)
        "reads": reads.to_json(),  # the parent turns these into witnesses (discovery_reads)
    }
    return result


def _local_sys_path(root: str) -> list[str]:
    """The sys.path entries under the root, relative to it: not those of the
    interpreter's own `.venv` when that lies under the root (see `children`)."""
    installed = children.installed_under(root)
    reals = (os.path.realpath(p) for p in sys.path if p)
    return sorted({os.path.relpath(r, root) for r in reals if r.startswith(root) and not (r + "/").startswith(installed)})


def _noting_envs_of_failed_imports(import_module, fa):
    """(an import_module that notes the environments a failed import made, {id(env): module})."""
    made: dict[int, str] = {}

    def noting(name):
        # the candidates' own imports are not charged to anyone (the tracker sees no user frame here)
        before = len(fa.loaded_environments(load_apps=False))
        try:
            return import_module(name)
        except BaseException:
            made.update((id(e), name) for e in fa.loaded_environments(load_apps=False)[before:])
            raise

    return noting, made


if __name__ == "__main__":
    try:
        code = main(sys.argv[1], sys.argv[2])
    finally:
        children.end_descendants()  # what the user's modules left running, setsid or not
    sys.exit(code)
