"""Running targets: action keys, cache lookups, and a parallel topological executor.

For each target, in dependency order, the engine asks its rule for the inputs,
digests every input file (through the stat cache), and computes the action
key: the sha256 of the canonical encoding of the rule's kind and version,
flyte-build's version, the input files' names and digests, the parameters,
and the digests of the dependency targets. A key found in the cache is a hit;
otherwise the rule runs in a fresh work directory, its outputs go into the
content store, and only then is the action entry written. Independent targets
run in parallel (`--jobs`); a failed target skips its dependents and nothing
else.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Callable

from .__about__ import __version__
from .stores.action_cache import Cache
from .context import Context
from .errors import FlyteBuildError, UserError
from .graph import Graph, Target
from .hashing import as_digest, key_of
from .rule_api import FileInput, Inputs, Request
from .hashing import file_sha256
from .stores.action_entry import OUTPUT_NAME, ActionEntry, Output, is_hex64


@dataclass(frozen=True)
class TargetResult:
    target: str
    kind: str
    env: str
    status: str  # built | cached | failed | skipped
    digest: str | None = None  # sha256:<hex> of the primary output (or of the result's metadata)
    path: str | None = None
    size: int | None = None
    seconds: float = 0.0
    key: str | None = None
    outputs: tuple[Output, ...] = ()
    meta: dict = field(default_factory=dict)
    error: str | None = None
    source: str | None = None  # local | shared | remote, for hits

    @property
    def cached(self) -> bool:
        return self.status == "cached"

    @property
    def ok(self) -> bool:
        return self.status in ("built", "cached")

    def record(self) -> dict:
        rec = {
            "target": self.target,
            "kind": self.kind,
            "env": self.env,
            "digest": self.digest,
            "cached": self.cached,
            "status": self.status,
            "path": self.path,
            "size": self.size,
            "seconds": round(self.seconds, 4),
            "key": self.key,
        }
        if self.source:
            rec["source"] = self.source
        if self.error:
            rec["error"] = self.error
        if len(self.outputs) > 1:
            rec["outputs"] = [{"name": o.name, "digest": as_digest(o.digest), "size": o.size} for o in self.outputs]
        rec.update({k: v for k, v in self.meta.items() if k not in rec})
        return rec


class Reporter:
    """Receives progress events; the CLI's shows them with rich. Default: silent."""

    def start(self, targets: list[str]) -> None: ...
    def begin(self, target: str) -> None: ...
    def log(self, target: str, line: str) -> None: ...
    def finish(self, result: TargetResult) -> None: ...
    def stop(self) -> None: ...


def _state_dir(ctx: Context) -> str:
    return f"state/{key_of(['root', str(ctx.root)])[:24]}"


class Engine:
    def __init__(self, ctx: Context, graph: Graph, cache: Cache, reporter: Reporter | None = None, jobs: int = 1):
        self.ctx = ctx
        self.graph = graph
        self.cache = cache
        self.reporter = reporter or Reporter()
        self.jobs = max(1, jobs)
        self.results: dict[str, TargetResult] = {}
        self._lock = threading.Lock()
        # this run's memo: each target's inputs are asked of its rule once (its
        # files are digested once anyway, see FileDigests), and `explain`, which
        # walks the dependencies of every target it is asked about, answers
        # each target once until a result is recorded
        self._inputs: dict[str, Inputs] = {}
        self._explained: dict[str, dict] = {}

    # -- keys --------------------------------------------------------------
    def key_document(self, target: Target, dep_digests: dict[str, str | None]) -> tuple[dict, tuple[FileInput, ...], dict]:
        rule = self.graph.rules[target.kind]
        inputs = self._inputs_of(target)
        files = []
        for name, path in sorted(inputs.files):
            try:
                hex_, _ = self.ctx.digest(path)
            except FileNotFoundError:
                raise UserError(f"{name}: input of {target.address} vanished while the build ran; run the build again") from None
            except OSError as exc:
                raise UserError(f"{name}: cannot read ({exc.strerror}), an input of {target.address}") from None
            files.append(FileInput(name, path, hex_))
        doc = {
            "rule": target.kind,
            "rule_version": rule.version,
            "tool": __version__,
            # the executable bit is part of what a file is: archives keep it
            "files": [[f.name, f.digest, "x"] if self.ctx.digests.executable(f.path) else [f.name, f.digest] for f in files],
            "params": inputs.params,
            "deps": {d: dep_digests.get(d) for d in sorted(inputs.deps)},
        }
        return doc, tuple(files), inputs.params

    def _inputs_of(self, target: Target) -> Inputs:
        inputs = self._inputs.get(target.address)
        if inputs is None:
            inputs = self.graph.rules[target.kind].inputs(self.ctx.env(target.env), self.ctx)
            for w in inputs.warnings:
                self.ctx.warn(w)
            self._inputs[target.address] = inputs
        return inputs

    # -- running -----------------------------------------------------------
    def run(self, addresses: list[str]) -> list[TargetResult]:
        needed = self.graph.closure(addresses)
        ts = TopologicalSorter({a: [d for d in self.graph.edges.get(a, ()) if d in needed] for a in needed})
        ts.prepare()
        self.reporter.start(needed)
        user_error: list[UserError] = []
        try:
            with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="flyte-build") as pool:
                running: dict[Future, str] = {}
                while ts.is_active():
                    for addr in ts.get_ready():
                        failed = [d for d in self.graph.edges.get(addr, ()) if d in self.results and not self.results[d].ok]
                        if failed or user_error:
                            t = self.graph.targets[addr]
                            why = f"dependency {failed[0]} failed" if failed else "not started after an input error"
                            self._finish(TargetResult(addr, t.kind, t.env, "skipped", error=why))
                            ts.done(addr)
                            continue
                        running[pool.submit(self._run_one, addr)] = addr
                    if not running:
                        continue
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in done:
                        addr = running.pop(fut)
                        exc = fut.exception()
                        if isinstance(exc, UserError):
                            user_error.append(exc)
                            t = self.graph.targets[addr]
                            self._finish(TargetResult(addr, t.kind, t.env, "failed", error=str(exc)))
                        elif exc is not None:
                            t = self.graph.targets[addr]
                            self._finish(TargetResult(addr, t.kind, t.env, "failed", error=f"{type(exc).__name__}: {exc}"))
                        ts.done(addr)
        finally:
            self.reporter.stop()
            self.ctx.persist()
            self.ctx.digests.save()
        if user_error:
            raise user_error[0]
        return [self.results[a] for a in needed]

    def _finish(self, result: TargetResult) -> None:
        with self._lock:
            self.results[result.target] = result
            self._explained.clear()  # a recorded result may change what explain says
        self.reporter.finish(result)

    def _run_one(self, addr: str) -> None:
        t = self.graph.targets[addr]
        rule = self.graph.rules[t.kind]
        env = self.ctx.env(t.env)
        started = time.perf_counter()
        self.reporter.begin(addr)
        deps = {d: self.results[d] for d in self.graph.edges.get(addr, ())}
        doc, files, params = self.key_document(t, {d: r.digest for d, r in deps.items()})
        key = key_of(doc)
        self._remember_inputs(addr, key, doc)
        entry, source = self.cache.lookup(key, _shape_check(rule, addr), rule.needs_signature) if rule.cacheable else (None, None)
        lines: list[str] = []

        def log(line: str) -> None:
            lines.append(line)
            self.reporter.log(addr, line)

        request = None
        if entry is None and rule.remote_check is not None:
            # a result that lives outside the cache (an image already in the registry)
            request = Request(addr, env, files, params, deps, self.ctx, Path(tempfile.gettempdir()), log)
            produced = rule.remote_check(request)
            if produced is not None:
                entry = self._store(addr, key, produced)
                source = "remote"
        if entry is not None:
            self._finish(self._result(t, "cached", entry, key, time.perf_counter() - started, source))
            return
        tmp_root = self.ctx.store.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"{t.kind}-", dir=tmp_root))
        try:
            request = Request(addr, env, files, params, deps, self.ctx, workdir, log)
            try:
                produced = rule.run(request)
            except FlyteBuildError:
                raise
            except Exception as exc:  # a rule's own bug: keep the traceback in the log
                lines.append(traceback.format_exc())
                raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
            finally:
                self._write_log(addr, lines)
            if rule.cacheable:
                entry = self._store(addr, key, produced)
            else:
                entry = ActionEntry(key=key, target=addr, outputs=(), meta=produced.meta)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self._finish(self._result(t, "built", entry, key, time.perf_counter() - started, None))

    def _store(self, addr: str, key: str, produced) -> ActionEntry:
        outputs = []
        for name, path in produced.files:
            hex_, size = self.ctx.store.put_file(Path(path))
            outputs.append(Output(name, hex_, size))
        entry = ActionEntry(key=key, target=addr, outputs=tuple(outputs), meta=produced.meta)
        self.cache.record(entry)
        return entry

    def _result(self, t: Target, status: str, entry: ActionEntry, key: str, seconds: float, source) -> TargetResult:
        if entry.outputs:
            main = entry.outputs[0]
            digest, size, path = as_digest(main.digest), main.size, str(self.ctx.store.blob_path(main.digest))
        else:
            digest, size, path = as_digest(key_of(entry.meta)), None, None
        meta = dict(entry.meta)
        if "digest" in meta:  # a rule may name its own primary digest (an image's)
            digest = meta.pop("digest")
        return TargetResult(t.address, t.kind, t.env, status, digest, path, size, seconds, key, entry.outputs, meta, None, source)

    # -- explain -----------------------------------------------------------
    def _remember_inputs(self, addr: str, key: str, doc: dict) -> None:
        rel = f"{_state_dir(self.ctx)}/last/{addr.replace(':', '--')}.json"
        try:
            # a no-op leaves the record as it was: reading it back is far cheaper
            # than an fsynced atomic rewrite per target (0.3 s of a 50-env no-op)
            last = self.ctx.store.read_json(rel)
            if not isinstance(last, dict) or last.get("key") != key:
                self.ctx.store.write_json(rel, {"key": key, "doc": doc})
        except OSError:
            pass

    def _write_log(self, addr: str, lines: list[str]) -> None:
        if lines:
            path = self.ctx.store.root / "logs" / f"{addr.replace(':', '--')}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n", errors="replace")

    def explain(self, addr: str) -> dict:
        """Why `addr` would rebuild: the inputs that differ from its last build
        (a report of this run's memo: callers must not change it)."""
        report = self._explained.get(addr)
        if report is None:
            report = self._explained[addr] = self._explain(addr)
        return report

    def _explain(self, addr: str) -> dict:
        deps_digest: dict[str, str | None] = {}
        deps_report = []
        for d in self.graph.edges.get(addr, ()):
            sub = self.explain(d)
            deps_digest[d] = sub.get("digest")
            if sub["would_rebuild"]:
                deps_report.append(d)
        t = self.graph.targets[addr]
        doc, _, _ = self.key_document(t, deps_digest)
        key = key_of(doc)
        entry = self.ctx.store.get_action(key)
        digest = None
        if entry is not None:
            digest = self._result(t, "cached", entry, key, 0, "local").digest
        last = self.ctx.store.read_json(f"{_state_dir(self.ctx)}/last/{addr.replace(':', '--')}.json")
        report = {"target": addr, "key": key, "would_rebuild": entry is None, "digest": digest, "dependencies_rebuilding": deps_report}
        if not (isinstance(last, dict) and isinstance(last.get("doc"), dict) and _doc_shaped(last["doc"])):
            report["reason"] = "never built in this checkout"
            return report
        old = last["doc"]
        old_files = {f[0]: f[1:] for f in old.get("files", [])}
        new_files = {f[0]: f[1:] for f in doc["files"]}
        report["changed_files"] = sorted(n for n in new_files if n in old_files and old_files[n] != new_files[n])
        report["added_files"] = sorted(set(new_files) - set(old_files))
        report["removed_files"] = sorted(set(old_files) - set(new_files))
        report["changed_params"] = sorted(
            k for k in set(old.get("params", {})) | set(doc["params"]) if old.get("params", {}).get(k) != doc["params"].get(k)
        )
        report["changed_deps"] = sorted(d for d in doc["deps"] if old.get("deps", {}).get(d) != doc["deps"][d])
        for k in ("rule_version", "tool"):
            if old.get(k) != doc.get(k):
                report.setdefault("changed_other", []).append(k)
        return report


def _doc_shaped(doc: dict) -> bool:
    """A remembered key document as `key_document` writes it (else: no record)."""
    files = doc.get("files", [])
    return (isinstance(files, list) and all(isinstance(f, list) and f and isinstance(f[0], str) for f in files)
            and isinstance(doc.get("params", {}), dict) and isinstance(doc.get("deps", {}), dict))


def _shape_check(rule, addr: str):
    """What a cache entry for `addr` must look like beyond the schema: a target
    of its rule's kind (envs with equal inputs share one entry, so not the same
    env), and the output names its rule makes (an entry with no outputs is no
    bundle)."""

    def check(entry: ActionEntry) -> str | None:
        if entry.target.split(":", 1)[0] != rule.kind:
            return f"written for {entry.target}, not a {rule.kind} target"
        names = tuple(o.name for o in entry.outputs)
        if rule.outputs is not None and names not in rule.outputs:
            return f"outputs {list(names)} are not what rule {rule.kind} makes"
        return None

    return check


def materialize(results: list[TargetResult], store, out: Path) -> list[TargetResult]:
    """Copy each result's outputs under `out/<kind>/`, named by digest; returns results with paths there."""
    from dataclasses import replace

    from . import atomic

    moved = []
    for r in results:
        if not r.ok or not r.outputs:
            moved.append(r)
            continue
        first = None
        for o in r.outputs:
            # names and digests were checked by the entry schema (plain names, 64 hex);
            # checked again here because this is where they become a path
            if not (is_hex64(o.digest) and OUTPUT_NAME.fullmatch(o.name) and ".." not in o.name):
                raise UserError(f"{r.target}: refusing output {o.name!r}: not a plain file name")
            ext = o.name[o.name.index("."):] if "." in o.name else ""
            dest = out / r.kind / f"{o.digest}{ext}"
            # a file already there is kept only if its bytes are the output's (a same-size
            # corrupted copy from an earlier run would otherwise stay)
            if not (dest.is_file() and not dest.is_symlink() and file_sha256(dest) == (o.digest, o.size)):
                if not store.verify_blob(o.digest):
                    raise UserError(f"{r.target}: cache blob {o.digest} is corrupt; run the build again")
                atomic.copy_file(store.blob_path(o.digest), dest)
            first = first or dest
        moved.append(replace(r, path=str(first)))
    return moved


OnResult = Callable[[TargetResult], None]
