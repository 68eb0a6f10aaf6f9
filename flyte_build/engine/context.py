"""What rules may ask of the repository: its config, environments and files.

One Context per run. It memoises the expensive questions (the file walk of
the root, each environment's import closure) so that several rules asking
the same thing pay once. Rules never get the Context itself: they get its
read-only `View` (no store, no mutable settings).
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..archives import bundle_files as files_mod
from ..discovery import imports
from ..config.settings import Config
from ..errors import UserError
from ..model import Discovery, EnvSpec
from ..stores.file_digests import RACY_SECONDS, FileDigests
from ..stores.local_store import LocalStore
from .import_edges import EDGES_FORMAT, EDGES_KEY, dir_slot, import_records, load_edges, pruned, with_carried


@dataclass(frozen=True)
class Options:
    """Per-run flags that are not repository config."""

    images: dict = field(default_factory=dict)  # --image NAME=URI (over config `images`)
    strict: bool = False
    out: Path | None = None
    sync_local_sys_paths: bool = True
    # what the caller gave the kinds for this run: frozen dataclasses the kinds
    # declare (the deploy kind's flags and version, ...), one of each type
    run_params: tuple = ()


def run_param(cls, params: tuple):
    """The first of `params` of type `cls`, else `cls()`."""
    for p in params:
        if isinstance(p, cls):
            return p
    return cls()


class Context:
    def __init__(self, cfg: Config, discovery: Discovery, store: LocalStore, digests: FileDigests, options: Options | None = None,
                 rules: dict | None = None):
        self.cfg = cfg
        self.root = cfg.root
        self.discovery = discovery
        self.store = store
        self.digests = digests
        self.options = options or Options()
        self.rules = rules or {}  # kind -> Rule: the run's rule sets, for `View.has_target`/`inputs_of`
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._closures: dict[str, list[str]] = {}
        self._digest_memo: dict[str, tuple[str, int]] = {}
        self._edge_memo: dict[str, frozenset[str]] = {}  # file -> the files its imports resolve to
        self._edge_store: dict | None = None
        self._edges_changed = False
        self._rel_memo: dict[str, str] = {}
        self._closure_records: dict[str, tuple[list[str], str]] = {}  # starts -> (closure, digest of its files)
        # os.path.realpath per path, once a run: 50 closures share most files, and
        # each realpath is an lstat per path component (most of an edit's key time)
        self._real_memo: dict[str, str] = {}
        # directories known to have no symlink from / down (see `_realpath`)
        self._plain_dirs: dict[str, bool] = {"/": True}
        self._abs_memo: dict[str, str] = {}  # discovery's relative names -> absolute paths
        self._join = files_mod.joiner(self.root)
        self._init_memo: dict[str, str | None] = {}  # directory -> its __init__.py under the root, if any

    @cached_property
    def view(self) -> "View":
        return View(self)

    @cached_property
    def python(self):
        """The project's interpreter (`interpreter.Interpreter`), which imports the user's modules."""
        from ..config import interpreter

        return interpreter.of(self.cfg, self.store.root)

    @cached_property
    def user_code(self):
        """The interpreter and deadline of the children that import the user's modules."""
        from ..discovery.child_run import timeout_of
        from ..rule_api import UserCode

        return UserCode(self.python.path, timeout_of(self.cfg))

    # -- environments ----------------------------------------------------
    @property
    def envs(self) -> tuple[EnvSpec, ...]:
        return self.discovery.envs

    def env(self, name: str) -> EnvSpec:
        return self.discovery.env(name)

    def image_refs(self) -> dict[str, str]:
        return {**self.cfg.images, **self.options.images}

    # -- files -------------------------------------------------------------
    def rel(self, path: str) -> str:
        hit = self._rel_memo.get(path)
        if hit is None:
            # a prefix test for the normalised absolute paths the closure yields
            # (relpath over thousands of files per env showed in no-op profiles)
            prefix = str(self.root).rstrip("/") + "/"
            if path.startswith(prefix) and "/./" not in path and "/../" not in path and "//" not in path[len(prefix) - 1:]:
                hit = path[len(prefix):]
            else:
                hit = Path(os.path.relpath(path, self.root)).as_posix()
            self._rel_memo[path] = hit
        return hit

    @cached_property
    def all_files(self) -> files_mod.FileSet:
        fs = files_mod.walk(self.root, allow_secrets=self.cfg.allow_secrets, flyte_semantics=True)
        with self._lock:
            self.warnings.extend(fs.warnings)
        return fs

    @cached_property
    def resolver(self) -> imports.Resolver:
        return imports.Resolver(self.root, imports.search_roots(self.root, self.cfg.source_roots, self.discovery.sys_path))

    def digest(self, path: str) -> tuple[str, int]:
        """(hex sha256, size) of a file, stat-checked once per run: shared
        libraries sit in dozens of closures, and one snapshot per run also keeps
        the closure and the action key agreeing on a file's bytes."""
        hit = self._digest_memo.get(path)
        if hit is None:
            hit = self._digest_memo[path] = self.digests.digest(path)
        return hit

    def _records(self, path: str):
        return import_records(path, self.digest(path)[0], self.digests)

    def _persisted_edges(self) -> dict:
        """Last run's resolved imports per file (see `load_edges`)."""
        with self._lock:
            if self._edge_store is None:
                scope = [str(r) for r in self.resolver.search_roots]
                self._edge_store = load_edges(self.digests.extra(EDGES_KEY), scope)
                if with_carried(self._edge_store, self.discovery.carried_imports):
                    self._edges_changed = True
            return self._edge_store

    def _edges(self, path: str) -> frozenset[str]:
        hit = self._edge_memo.get(path)
        if hit is None:
            hex_ = self.digest(path)[0]
            known = self._persisted_edges()["files"].get(path)
            if isinstance(known, list) and len(known) == 3 and known[0] == hex_ and isinstance(known[1], list):
                hit = frozenset(known[1])
            else:
                records = self._records(path)
                hit = self.resolver.targets(path, records)
                decided = sorted(self.resolver.decided_by(path, records))
                with self._lock:
                    st = self._edge_store
                    st["files"][path] = [hex_, sorted(hit), [dir_slot(st, d) for d in decided]]
                    self._edges_changed = True
            self._edge_memo[path] = hit
        return hit

    def persist(self) -> None:
        """Keep this run's resolved imports for the next run (with the stat cache):
        each file's, with the directories whose listing decided them."""
        if not self._edges_changed:
            return
        with self._lock:
            st = self._edge_store
            fresh = time.time_ns() - int(RACY_SECONDS * 1e9)
            # directories first seen this run, or changed since the last: their
            # mtime now (their entries were all resolved this run); the others
            # keep the mtime their entries were checked against
            for i in st["restat"]:
                try:
                    m = os.stat(st["dirs"][i][0]).st_mtime_ns
                except OSError:
                    m = None
                st["dirs"][i][1] = m if m is not None and m < fresh else None
            dirs, files = pruned(st["dirs"], st["files"])
            table: dict[str, int] = {}
            closures = {
                ck: [[table.setdefault(p, len(table)) for p in paths], digest]
                for ck, (paths, digest) in sorted(self._closure_records.items())
            }
            self.digests.set_extra("edges", None)  # an earlier version's table, kept per run and directory
            self.digests.set_extra(EDGES_KEY, {
                "v": EDGES_FORMAT, "scope": st["scope"], "dirs": dirs, "files": files,
                "paths": list(table), "closures": closures,
            })
            self._edges_changed = False

    def watched_dirs(self) -> set[str]:
        """The directories whose listing decided an import's resolution (this
        run's lookups and the kept ones): a new file there may change a closure."""
        dirs = set(self.resolver.witness) if "resolver" in self.__dict__ else set()
        if self._edge_store is not None:
            dirs.update(d for d, _ in self._edge_store["dirs"])
        return dirs

    def closure(self, env: EnvSpec) -> list[str]:
        """Absolute paths of the files in the env's import closure under the root."""
        with self._lock:
            hit = self._closures.get(env.name)
        if hit is not None:
            return hit
        starts = []
        # its own modules, and what discovery saw their loads import (modules
        # imported by a computed name are found only that way)
        for rel in dict.fromkeys([env.file, *(t.file for t in env.tasks), *env.loaded]):
            if rel and not rel.startswith("/"):
                starts.append(self._abs(rel))
        ck = "\0".join(starts)
        paths = self._kept_closure(ck)
        if paths is None:
            paths, errors = imports.closure(starts, None, None, self._edges, realpath=self._realpath)
            if errors:
                path, msg = errors[0]
                raise UserError(f"{self.rel(path)}: {msg} (while following the imports of `{env.name}`)")
            with self._lock:
                self._closure_records[ck] = (paths, self._files_digest(paths))
                self._edges_changed = True
        paths = self._with_package_inits(paths)
        with self._lock:
            self._closures[env.name] = paths
        return paths

    def _with_package_inits(self, paths: list[str]) -> list[str]:
        """`paths` plus the `__init__.py` of every directory from the root down
        to each file (the root's own too): importing a module runs its
        packages' __init__ first, so a bundle without them loads differently
        remotely (their side effects missing, or an image's same-named
        package found instead)."""
        out = set(paths)
        prefix = str(self.root).rstrip("/") + "/"
        dirs: set[str] = set()
        for p in paths:
            if not p.startswith(prefix):
                continue
            d = os.path.dirname(p)
            while d not in dirs and (d + "/").startswith(prefix):
                dirs.add(d)
                d = os.path.dirname(d)
        for d in dirs:
            init = self._package_init(d)
            if init is not None:
                out.add(init)
        return sorted(out)

    def _package_init(self, d: str) -> str | None:
        """`d/__init__.py` if it is a file under the root (asked once a run: the
        50 closures of a repository share most directories)."""
        try:
            return self._init_memo[d]
        except KeyError:
            pass
        init = os.path.join(d, "__init__.py")
        hit = init if os.path.isfile(init) and files_mod.inside(self.root, init, real=self._realpath(init)) else None
        self._init_memo[d] = hit
        return hit

    def _abs(self, rel: str) -> str:
        """str(root / rel), once per name and run (each env lists hundreds of
        loaded modules, most shared with the other envs)."""
        hit = self._abs_memo.get(rel)
        if hit is None:
            hit = self._abs_memo[rel] = self._join(rel)
        return hit

    def _files_digest(self, paths: list[str]) -> str:
        return hashlib.sha256("\n".join(self.digest(p)[0] for p in paths).encode()).hexdigest()

    def _kept_closure(self, ck: str) -> list[str] | None:
        """Last run's closure from the same start files, if it is still right: the
        resolved imports are still valid (see `_persisted_edges`) and none of its
        files changed, so following the imports again would give the same files."""
        st = self._persisted_edges()
        rec = st["closures"].get(ck)
        if rec is None:
            return None
        table = st["paths"]
        try:
            paths = [table[i] for i in rec[0]]
            lost = st["dropped"]
            if lost and not all(p in st["files"] and p not in lost for p in paths if p.endswith(".py")):
                return None  # a file's imports must be resolved again
            if self._files_digest(paths) != rec[1]:
                return None
        except (IndexError, TypeError, OSError):
            return None
        with self._lock:
            self._closure_records[ck] = (paths, rec[1])
        return paths

    def include_files(self, env: EnvSpec) -> dict[str, str]:
        """The env's `include` entries (flyte's own) and the config's per-env
        `include`: files, directories (walked with the ignores) or globs."""
        out: dict[str, str] = {}
        patterns = list(env.include) + list(self.cfg.include_for(env.name))
        for pat in patterns:
            if pat.startswith("/") or pat.startswith("..") or "/../" in f"/{pat}/":
                raise UserError(f"`{env.name}`: include entry {pat!r} leads outside the root")
            matches = sorted(glob.glob(str(self.root / pat), recursive=True)) if any(c in pat for c in "*?[") else [str(self.root / pat)]
            if not matches or not all(os.path.exists(m) for m in matches):
                raise UserError(f"`{env.name}`: include entry {pat!r} matches no file under the root")
            for m in matches:
                if not files_mod.inside(self.root, m):
                    raise UserError(f"`{env.name}`: include entry {pat!r} resolves outside the root ({os.path.realpath(m)})")
                if os.path.isdir(m):
                    sub = files_mod.walk(self.root, start=self.rel(m), allow_secrets=self.cfg.allow_secrets)
                    out.update(sub.files)
                    with self._lock:
                        self.warnings.extend(sub.warnings)
                else:
                    out[self.rel(m)] = m
        return out

    def walk(self, start: str) -> dict[str, str]:
        """name -> path of the files under `start` (relative to the root), with
        the ignores and the secrets policy; its warnings become the run's."""
        fs = files_mod.walk(self.root, start=start, allow_secrets=self.cfg.allow_secrets)
        for w in fs.warnings:
            self.warn(w)
        return fs.files

    def _realpath(self, path: str) -> str:
        """os.path.realpath(path), once per path and run. A normalised absolute
        path whose directories hold no symlink (each directory checked once a
        run) and which is no symlink itself is its own realpath: one lstat a
        file instead of one per path component."""
        hit = self._real_memo.get(path)
        if hit is None:
            d = os.path.dirname(path)
            if (path.startswith("/") and not path.startswith("//") and os.path.normpath(path) == path
                    and self._plain_dir(d) and not _is_link(path)):
                hit = path
            else:
                hit = os.path.realpath(path)
            self._real_memo[path] = hit
        return hit

    def _plain_dir(self, d: str) -> bool:
        """Whether no component of the normalised absolute directory `d` is a symlink."""
        hit = self._plain_dirs.get(d)
        if hit is None:
            hit = self._plain_dirs[d] = self._plain_dir(os.path.dirname(d)) and not _is_link(d)
        return hit

    def warn(self, msg: str) -> None:
        with self._lock:
            if msg not in self.warnings:
                self.warnings.append(msg)


class View:
    """What a rule's `applies`, `deps`, `inputs` and `describe` may read, read-only:
    the repository's config, the environments, the run's settings and the
    parameters given to the kinds, the files (walks, import closures, digests),
    image references. It holds no store and nothing to write but warnings."""

    __slots__ = ("_ctx", "_goal")

    def __init__(self, ctx: Context, goal: tuple = ()):
        self._ctx = ctx
        self._goal = goal

    def with_run_params(self, params: tuple) -> "View":
        """This view, with run parameters a goal resolved (e.g. the deploy goal's backend)."""
        return View(self._ctx, (*params, *self._goal))

    @property
    def root(self) -> Path:
        return self._ctx.root

    @property
    def cfg(self) -> Config:
        return self._ctx.cfg  # frozen

    @property
    def discovery(self) -> Discovery:
        return self._ctx.discovery  # frozen

    @property
    def python(self):
        """The project's interpreter (`flyte_build.config.interpreter.Interpreter`): its Python and
        flyte versions are the ones the user's modules are imported and serialized with."""
        return self._ctx.python

    @property
    def envs(self) -> tuple[EnvSpec, ...]:
        return self._ctx.envs

    def env(self, name: str) -> EnvSpec:
        return self._ctx.env(name)

    @property
    def strict(self) -> bool:
        return self._ctx.options.strict

    @property
    def sync_local_sys_paths(self) -> bool:
        return self._ctx.options.sync_local_sys_paths

    def run_params(self, cls):
        """The run's parameters of type `cls`, a frozen dataclass a kind declares:
        a goal's (`with_run_params`), else the caller's (`Settings.run_params`),
        else `cls()` (its defaults)."""
        return run_param(cls, (*self._goal, *self._ctx.options.run_params))

    def image_refs(self) -> dict[str, str]:
        return self._ctx.image_refs()

    def rel(self, path: str) -> str:
        return self._ctx.rel(path)

    def digest(self, path) -> tuple[str, int]:
        return self._ctx.digest(str(path))

    def executable(self, path) -> bool:
        return self._ctx.digests.executable(str(path))

    @property
    def all_files(self) -> files_mod.FileSet:
        return self._ctx.all_files

    def walk(self, start: str) -> dict[str, str]:
        return self._ctx.walk(start)

    def closure(self, env: EnvSpec) -> list[str]:
        return self._ctx.closure(env)

    def include_files(self, env: EnvSpec) -> dict[str, str]:
        return self._ctx.include_files(env)

    def realpath(self, path: str) -> str:
        """os.path.realpath, once per path and run (closures share most files)."""
        return self._ctx._realpath(path)

    def warn(self, msg: str) -> None:
        self._ctx.warn(msg)

    # -- other kinds' targets: asked of the engine's rules by address, never by
    # importing another kind's modules (the rule boundary, tests/test_layers.py)
    def has_target(self, address: str) -> bool:
        """Whether `KIND:ENV` is a target of this run (its kind's rule applies to the env)."""
        kind, _, env = address.partition(":")
        rule = self._ctx.rules.get(kind)
        return rule is not None and any(e.name == env for e in self.envs) and bool(rule.applies(self.env(env), self))

    def inputs_of(self, address: str):
        """What target `KIND:ENV` declares it reads (its rule's `Inputs`), known before it is
        built: e.g. what decides a PEX's bytes, which an image's tag stands on."""
        kind, _, env = address.partition(":")
        if not self.has_target(address):
            raise KeyError(f"{address} is not a target of this run")
        return self._ctx.rules[kind].inputs(self.env(env), self)


def _is_link(path: str) -> bool:
    """As os.path.realpath sees a path component: a symlink, or else (missing,
    unreadable) a plain name."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False
