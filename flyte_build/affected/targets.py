"""Which targets a change since a git revision affects, and why.

A target is affected when what it reads differs between the revision and the
working tree. Both sides are asked the same question — each target's rule
`inputs()` — so the answer is generic over rules and right for the "old" side
of a change: a deleted or renamed file, or one an ignore-file edit dropped,
affects the targets that read it at REV even though nobody reads it now.

- the working tree: the current workspace (cached discovery, cached parses);
- REV: `git archive` of the revision into a temporary directory, a workspace
  there (discovery in a child, as always), then a summary of every target's
  input paths, parameters and dependencies. The summary is stored in the cache
  under the commit's sha and the settings, so a second question about the
  same REV costs one JSON read.

Then, per target: an input path git reports changed (either side), an input
path gained or lost, changed parameters (the config table, the env's spec) or
changed dependencies make it affected; a target only one side has is new or
removed. Finally every target that depends on an affected one (a deploy on
its bundle and image, a deploy on the deploys of its `depends_on`) is
affected too, carrying the file that started it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from graphlib import TopologicalSorter
from pathlib import Path

from ..config import settings as config_mod
from ..discovery import reads as discovery_reads
from . import gitchanges
from ..__about__ import __version__
from ..errors import FlyteBuildError, UserError
from ..hashing import file_sha256, key_of

FORMAT = 3  # 2: the revision is evaluated in a mirror of the work tree's layout; 3: witnesses kept
ROOT_MARK = "<root>"
IGNORE_FILES = (".gitignore", ".flyteignore", ".dockerignore")


# -- one side: every target's inputs, as plain data -------------------------------
@dataclass(frozen=True)
class TargetState:
    address: str
    kind: str
    env: str
    files: tuple[str, ...]  # input paths relative to the root
    params: str  # canonical JSON, the root's path replaced by ROOT_MARK
    deps: tuple[str, ...]
    error: str | None = None  # inputs() failed on this side


@dataclass(frozen=True)
class Snapshot:
    targets: dict[str, TargetState]
    env_files: dict[str, str]  # env name -> its defining file
    config_key: str  # digest of the flyte table, to tell config edits from spec edits
    config_file: str | None  # pyproject.toml relative to the root

    def to_json(self) -> dict:
        return {
            "targets": {a: [t.kind, t.env, list(t.files), t.params, list(t.deps), t.error] for a, t in self.targets.items()},
            "env_files": self.env_files,
            "config_key": self.config_key,
            "config_file": self.config_file,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Snapshot":
        targets = {a: TargetState(a, k, e, tuple(f), p, tuple(dp), err) for a, (k, e, f, p, dp, err) in d["targets"].items()}
        return cls(targets, d["env_files"], d["config_key"], d["config_file"])


def _rel_paths(root: str, path: str, memo: dict) -> list[str]:
    """The input's path under the root, and its real path's too when a symlink moves it.

    Memoised per snapshot: closures overlap, so most paths come up many times,
    and this runs for every input of every target."""
    hit = memo.get(path)
    if hit is not None:
        return hit
    out = []
    candidates = [path] if path.startswith(root) and not os.path.islink(path) else [os.path.abspath(path), os.path.realpath(path)]
    for p in dict.fromkeys(candidates):
        if p.startswith(root):
            out.append(p[len(root):].replace(os.sep, "/"))
    memo[path] = out
    return out


def snapshot(ws) -> Snapshot:
    root = ws.cfg.root
    targets: dict[str, TargetState] = {}
    prefix, memo = str(root).rstrip(os.sep) + os.sep, {}
    for addr, t in sorted(ws.graph.targets.items()):
        env = ws.ctx.env(t.env)
        deps = tuple(ws.graph.edges.get(addr, ()))
        try:
            inputs = ws.graph.rules[t.kind].inputs(env, ws.ctx.view)
        except FlyteBuildError as exc:
            targets[addr] = TargetState(addr, t.kind, t.env, (), "", deps, str(exc))
            continue
        files = sorted({rel for _, path in inputs.files for rel in _rel_paths(prefix, path, memo)})
        params = json.dumps(inputs.params, sort_keys=True, default=str).replace(str(root), ROOT_MARK)
        targets[addr] = TargetState(addr, t.kind, t.env, tuple(files), params, tuple(sorted({*deps, *inputs.deps})))
    table = config_mod.read_table(ws.cfg.pyproject) if ws.cfg.pyproject else {}
    cfg_file = None
    if ws.cfg.pyproject:
        rel = os.path.relpath(ws.cfg.pyproject, root)
        cfg_file = None if rel.startswith("..") else Path(rel).as_posix()
    return Snapshot(targets, {e.name: e.file for e in ws.ctx.envs}, key_of(table), cfg_file)


# -- the revision's side -----------------------------------------------------------
def _rules_digest() -> str:
    from ..engine.rulesets import builtin_dir

    d = builtin_dir()
    return key_of({p.name: file_sha256(p)[0] for p in sorted(d.glob("*.py"))})


def _rev_settings(ws, rev_root: Path):
    """The current run's settings, re-rooted at the exported revision."""
    s = ws.settings
    paths = []
    for p in s.selection.paths:
        absp = Path(p) if os.path.isabs(p) else Path.cwd() / p
        paths.append(str(rev_root / os.path.relpath(absp.resolve(), ws.cfg.root)))
    sel = replace(s.selection, paths=tuple(paths))
    # the revision's modules are imported by the same interpreter as the working tree's (its
    # .venv is not in the exported revision)
    return replace(s, root_dir=str(rev_root), selection=sel, cache=None, cache_required=None, python=ws.ctx.python.path)


def _run_params(params: tuple) -> list:
    """The kinds' run parameters as plain data (type name, fields), for a key."""
    from dataclasses import asdict

    return sorted([type(p).__name__, asdict(p)] for p in params)


def _summary_key(ws, changes: gitchanges.Changes) -> str:
    s = ws.settings
    python = ws.ctx.python  # the project's interpreter imports the revision's modules
    return key_of({
        "format": FORMAT,
        "tool": __version__,
        "rules": _rules_digest(),
        "flyte": file_sha256(python.flyte_marker)[0],
        "python": list(python.python[:2]),
        "commit": changes.commit,
        "prefix": changes.prefix,
        "selection": [list(s.selection.paths), s.selection.variable, s.selection.all, s.selection.recursive],
        "cwd": os.path.relpath(Path.cwd().resolve(), ws.cfg.root) if s.selection.paths else None,
        # (None, []): where the deploy version and the kinds' parameters were, so a
        # run without them keeps its key
        "settings": [s.copy_style, s.images, s.ignore_load_errors, s.project, s.domain, None, _run_params(s.run_params)],
        # flyte's config file decides the project and domain discovery runs with
        "flyte_config": ws.flyte_ref.fingerprint(),
    })


def rev_snapshot(ws, changes: gitchanges.Changes) -> tuple[Snapshot, bool]:
    """The revision's snapshot and whether it came from the cache (local, else shared)."""
    from ..stores import shared_affected

    key = _summary_key(ws, changes)
    rel = f"affected/{key}.json"
    hit = ws.store.read_json(rel)
    # what the revision's modules read outside its tree (STAGE, flyte's config)
    # must read the same here, or the summary is another machine's answer
    if hit and hit.get("format") == FORMAT and discovery_reads.still_valid(hit.get("witness"), ws.cfg.root, ws.digests):
        return Snapshot.from_json(hit["snapshot"]), True
    shared = ws.cache.shared
    got = shared_affected.fetch(shared, ws.cache.stats, key, ws.cfg.root, ws.digests) if shared is not None else None
    if got is not None:
        _keep(ws, rel, changes, *got)
        return Snapshot.from_json(got[0]), True
    snap, clean, witness = _evaluate(ws, changes)
    _keep(ws, rel, changes, snap.to_json(), witness)
    if shared is not None and clean:  # a module that failed to load may be this machine's own trouble
        shared_affected.publish(shared, ws.cache.stats, key, snap.to_json(), witness, ws.cfg.root)
    return snap, False


def _keep(ws, rel: str, changes: gitchanges.Changes, snap: dict, witness: dict) -> None:
    try:
        ws.store.write_json(rel, {"format": FORMAT, "commit": changes.commit, "snapshot": snap, "witness": witness})
    except OSError:
        pass


def _evaluate(ws, changes: gitchanges.Changes) -> tuple[Snapshot, bool, dict]:
    """The revision's snapshot, from its tree exported and a workspace there,
    whether every module there loaded, and the witnesses its commit does not decide."""
    from ..workspace import Workspace

    tmp_parent = ws.store.root / "tmp"
    tmp_parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"rev-{changes.commit[:12]}-", dir=tmp_parent)).resolve()
    try:
        rev_root = gitchanges.export_mirror(changes, tmp)
        settings = _rev_settings(ws, rev_root)
        cfg = config_mod.load(rev_root)
        # nothing of the revision is built; only its discovery may come from
        # (and go to) the shared cache: the key is the tree's content, wherever it sits
        cfg = replace(cfg, cache=None, cache_required=False)
        # not the resident process's warm child: it holds the working tree's modules, which this would replace
        rev_ws = Workspace(settings, cfg=cfg, discovery_shared=ws.cache.shared, warm=False)
        clean = not rev_ws.discovery.failures
        witness = discovery_reads.outside_tree(rev_ws.discovery.reads)
        snap = snapshot(rev_ws)
        snap = Snapshot(
            {a: replace(t, params=t.params.replace(str(rev_root), ROOT_MARK)) for a, t in snap.targets.items()},
            snap.env_files, snap.config_key, snap.config_file,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return snap, clean, witness


# -- the comparison ----------------------------------------------------------------
@dataclass(frozen=True)
class Reason:
    target: str
    kind: str
    env: str
    reason: str  # input-changed | inputs-added | inputs-removed | params-changed | deps-changed | new | dependency | error
    file: str | None  # the file that made it affected (for a dependency: the one that made the dependency so)
    change: str | None = None  # what git says happened to `file`
    files: tuple[str, ...] = ()  # every changed input, for the curious
    via: str | None = None  # for a dependency: the affected target it depends on
    detail: str = ""

    def record(self) -> dict:
        d = {
            "target": self.target, "kind": self.kind, "env": self.env, "reason": self.reason, "file": self.file,
            "change": self.change, "detail": self.detail,
            # the fields every target record carries (BUILD.md, JSON output); nothing was built here
            "digest": None, "cached": False,
        }
        if self.files:
            d["files"] = list(self.files)
        if self.via:
            d["via"] = self.via
        return d


@dataclass(frozen=True)
class Affected:
    rev: str
    commit: str
    changes: tuple[gitchanges.Change, ...]
    targets: tuple[Reason, ...]  # dependency order
    removed_targets: tuple[str, ...] = ()
    removed_envs: tuple[str, ...] = ()
    rev_cached: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def addresses(self) -> list[str]:
        return [r.target for r in self.targets]

    def envs(self) -> list[dict]:
        out: dict[str, dict] = {}
        for r in self.targets:
            e = out.setdefault(r.env, {"env": r.env, "file": r.file, "reason": r.reason, "targets": []})
            e["targets"].append(r.target)
        return list(out.values())

    def to_json(self) -> dict:
        envs = self.envs()
        return {
            "since": self.rev,
            "commit": self.commit,
            "changed_files": [c.to_json() for c in self.changes],
            "targets": [r.record() for r in self.targets],
            "envs": envs,
            "removed": {"targets": list(self.removed_targets), "envs": list(self.removed_envs)},
            # ready for `strategy.matrix` in GitHub Actions (`fromJSON(...)`)
            "matrix": {"include": [{"env": e["env"]} for e in envs]},
            "rev_cached": self.rev_cached,
            "warnings": list(self.warnings),
        }


def _first_changed(paths, changed: dict) -> tuple[str | None, str | None]:
    for p in paths:
        if p in changed:
            return p, changed[p].status
    return None, None


def _compare(t: TargetState, old: TargetState | None, changed: dict, cur: Snapshot, prev: Snapshot) -> Reason | None:
    env_file = cur.env_files.get(t.env)
    mk = lambda reason, file, **kw: Reason(t.address, t.kind, t.env, reason, file, changed[file].status if file in changed else None, **kw)
    if t.error:
        return mk("error", env_file, detail=t.error)
    if old is None:
        return mk("new", env_file, detail="not a target at the revision")
    if old.error:
        return mk("error", env_file, detail=f"at the revision: {old.error}")
    now, then = set(t.files), set(old.files)
    hits = sorted(p for p in now | then if p in changed)
    if hits:
        return mk("input-changed", hits[0], files=tuple(hits))
    if now != then:
        # no input itself changed: an ignore file or the config moved the edge
        gained, lost = sorted(now - then), sorted(then - now)
        cause, _ = _first_changed([p for p in sorted(changed) if p.rsplit("/", 1)[-1] in IGNORE_FILES] + [cur.config_file], changed)
        reason = "inputs-added" if gained else "inputs-removed"
        return mk(reason, cause or (gained or lost)[0], files=tuple(gained or lost),
                  detail=f"{len(gained)} input(s) gained, {len(lost)} lost")
    if t.params != old.params:
        a, b = json.loads(t.params or "{}"), json.loads(old.params or "{}")
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        cfg_edit = cur.config_key != prev.config_key and cur.config_file in changed
        file = cur.config_file if cfg_edit else env_file
        return mk("params-changed", file, detail="changed: " + ", ".join(keys))
    if t.deps != old.deps:
        return mk("deps-changed", env_file, detail=f"dependencies now {', '.join(t.deps) or 'none'}")
    return None


def compare(graph_edges: dict[str, tuple[str, ...]], cur: Snapshot, prev: Snapshot, changes: gitchanges.Changes) -> tuple[list[Reason], list[str], list[str]]:
    changed = changes.by_path()
    direct: dict[str, Reason] = {}
    for addr, t in cur.targets.items():
        r = _compare(t, prev.targets.get(addr), changed, cur, prev)
        if r is not None:
            direct[addr] = r
    # dependency order over the current graph, ties by address
    ts = TopologicalSorter({a: [d for d in graph_edges.get(a, ()) if d in cur.targets] for a in cur.targets})
    ts.prepare()
    order: list[str] = []
    while ts.is_active():
        ready = sorted(ts.get_ready())
        order.extend(ready)
        ts.done(*ready)
    result: dict[str, Reason] = {}
    for addr in order:
        if addr in direct:
            result[addr] = direct[addr]
            continue
        dep = next((d for d in sorted(graph_edges.get(addr, ())) if d in result), None)
        if dep is not None:
            t, why = cur.targets[addr], result[dep]
            result[addr] = Reason(addr, t.kind, t.env, "dependency", why.file, why.change, via=dep, detail=f"depends on {dep}")
    removed_targets = sorted(set(prev.targets) - set(cur.targets))
    removed_envs = sorted(set(prev.env_files) - set(cur.env_files))
    return [result[a] for a in order if a in result], removed_targets, removed_envs


def affected_targets(ws, rev: str) -> Affected:
    """The targets of `ws` affected by every change since git revision `rev`."""
    changes = gitchanges.changes_since(ws.cfg.root, rev)
    if not changes.changes:
        # the same tree on both sides, and the same flags: nothing can differ
        return Affected(rev, changes.commit, (), ())
    cur = snapshot(ws)
    try:
        prev, cached = rev_snapshot(ws, changes)
    except UserError as exc:
        # a revision we cannot evaluate (no config then, a module that failed
        # to import): everything now is treated as new rather than guessed at
        warning = f"cannot evaluate the targets at {rev} ({exc}); treating every target as affected"
        prev, cached = Snapshot({}, {}, "", None), False
        reasons, removed_t, removed_e = compare(ws.graph.edges, cur, prev, changes)
        return Affected(rev, changes.commit, changes.changes, tuple(reasons), (), (), cached, (warning,))
    reasons, removed_t, removed_e = compare(ws.graph.edges, cur, prev, changes)
    return Affected(rev, changes.commit, changes.changes, tuple(reasons), tuple(removed_t), tuple(removed_e), cached)


def select_changed(ws, rev: str, patterns: list[str] | None = None, default_kinds: list[str] | None = None) -> list[str]:
    """The targets matching `patterns` (default: the command's default kinds)
    that are affected since `rev`, in dependency order; for `--changed-since`."""
    return select_changed_all(ws, rev, patterns, default_kinds)[0]


def select_changed_all(ws, rev: str, patterns: list[str] | None = None,
                       default_kinds: list[str] | None = None) -> tuple[list[str], list[str]]:
    """`select_changed`, and every affected target whatever the patterns
    (what `deploy --changed-since` needs to tell unaffected dependencies)."""
    wanted = set(ws.graph.select(list(patterns or []), default_kinds))
    result = affected_targets(ws, rev)
    for w in result.warnings:
        ws._warn(w)
    return [a for a in result.addresses if a in wanted], list(result.addresses)
