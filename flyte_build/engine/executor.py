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

Only the engine writes the stores. A rule's `inputs` reads the run through a
read-only `context.View`; its `run` gets its declared files, params,
dependency results, a work directory and a log, and returns what it wrote
there; a rule whose effect lives outside the cache (a deploy) may also read
and return small state documents, which the engine keeps. Two targets with
one action key (envs sharing an image spec) run once: the second waits for
the first and is then a cache hit.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Callable

from ..__about__ import __version__
from ..stores.two_tier_cache import Cache
from .context import Context
from . import explain as explain_mod
from ..errors import BuildFailed, FlyteBuildError, UserError
from .graph import Graph, Target
from ..hashing import as_digest, canonical_json, key_of, sha256_hex
from ..rule_api import FileInput, Inputs, Request
from ..stores.action_entry import ActionEntry, Output


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


class Engine:
    def __init__(self, ctx: Context, graph: Graph, cache: Cache, reporter: Reporter | None = None, jobs: int = 1,
                 params: tuple = (), secrets: dict | None = None, fail_alone: bool = False):
        """`params`: run parameters a goal adds to the rules' view (frozen
        dataclasses its kind declares, see `View.run_params`; they are declared
        inputs where a rule reads them); `secrets`: per kind,
        credentials its `run` gets and no key, log or store ever holds;
        `fail_alone`: a target's input error (a UserError) fails that target and
        what depends on it, not the run (a deploy goes on with the other envs)."""
        self.ctx = ctx
        self.view = ctx.view.with_run_params(params) if params else ctx.view
        self.graph = graph
        self.cache = cache
        self.reporter = reporter or Reporter()
        self.jobs = max(1, jobs)
        self.secrets = secrets or {}
        self.fail_alone = fail_alone
        self.results: dict[str, TargetResult] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._ran: dict[str, str] = {}  # action key -> the target that ran it in this run
        # this run's memo: each target's inputs are asked of its rule once (its
        # files are digested once anyway, see FileDigests), and `explain`, which
        # walks the dependencies of every target it is asked about, answers
        # each target once until a result is recorded
        self._inputs: dict[str, Inputs] = {}
        self._explained: dict[str, dict] = {}
        self._sessions: dict[str, object] = {}  # kind -> its run's object (Rule.session)

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
            inputs = self.graph.rules[target.kind].inputs(self.ctx.env(target.env), self.view)
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
                running: dict[Future, tuple[str, ...]] = {}
                batches: dict[str, list[str]] = {}  # kind -> ready targets of a rule that runs them together
                while ts.is_active():
                    for addr in ts.get_ready():
                        failed = [d for d in self.graph.edges.get(addr, ()) if d in self.results and not self.results[d].ok]
                        if failed or user_error:
                            t = self.graph.targets[addr]
                            why = f"dependency {failed[0]} failed" if failed else "not started after an input error"
                            self._finish(TargetResult(addr, t.kind, t.env, "skipped", error=why))
                            ts.done(addr)
                            continue
                        if self._batched(addr):
                            batches.setdefault(self.graph.targets[addr].kind, []).append(addr)
                        else:
                            running[pool.submit(self._run_one, addr)] = (addr,)
                    for addrs in batches.values():
                        running[pool.submit(self._run_batch, addrs)] = tuple(addrs)
                    batches.clear()
                    if not running:
                        continue
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in done:
                        addrs = running.pop(fut)
                        self._settle(addrs, fut.exception(), user_error)
                        for addr in addrs:
                            ts.done(addr)
        finally:
            self.reporter.stop()
            self.ctx.persist()
            self.ctx.digests.save()
        if user_error:
            raise user_error[0]
        return [self.results[a] for a in needed]

    def _settle(self, addrs: tuple[str, ...], exc, user_error: list) -> None:
        """Record a failed job's targets (those it did not finish itself)."""
        if exc is None:
            return
        if isinstance(exc, UserError) and not self.fail_alone:
            user_error.append(exc)
        for addr in addrs:
            if addr not in self.results:
                t = self.graph.targets[addr]
                error = str(exc) if isinstance(exc, FlyteBuildError) else f"{type(exc).__name__}: {exc}"
                log = self._write_log(addr, [f"flyte-build: {addr} failed: {error}"], append=True)
                self._finish(TargetResult(addr, t.kind, t.env, "failed", error=error, meta={"log": log} if log else {}))

    def _batched(self, addr: str) -> bool:
        rule = self.graph.rules[self.graph.targets[addr].kind]
        return rule.run_batch is not None and rule.cacheable and rule.deliver is None

    def _run_batch(self, addrs: list[str]) -> None:
        """Ready targets of one rule with `run_batch`: each is keyed and looked up
        alone; the misses run in one call (one tool process for all of them),
        each with its own request and work directory, and are stored alone."""
        todo = []
        for addr in addrs:
            started = time.perf_counter()
            t, rule, key, files, params, deps = self._keyed(addr)
            entry, source = self.cache.lookup(key, _shape_check(rule, addr), needs_signature(rule), _output_check(rule, files))
            if entry is not None:
                self._finish(self._result(t, "cached", entry, key, time.perf_counter() - started, source))
                continue
            todo.append((t, key, self.ctx.env(t.env), files, params, deps, started))
        if not todo:
            return
        workdirs = [self._workdir(t.kind) for t, *_ in todo]
        logs: list[list[str]] = [[] for _ in todo]
        try:
            requests = [self._request(t, env, files, params, deps, w, self._logger(t.address, lines))
                        for (t, _, env, files, params, deps, _), w, lines in zip(todo, workdirs, logs)]
            produced = self.graph.rules[todo[0][0].kind].run_batch(requests)
            for (t, key, *_, started), p in zip(todo, produced):
                if isinstance(p, BuildFailed):  # this target's own failure: the others of the batch go on
                    self._finish(TargetResult(t.address, t.kind, t.env, "failed", error=str(p)))
                    continue
                entry = self._store(t.address, key, p)
                self._finish(self._result(t, "built", entry, key, time.perf_counter() - started, None))
        finally:
            for (t, *_), lines, w in zip(todo, logs, workdirs):
                self._write_log(t.address, lines)
                shutil.rmtree(w, ignore_errors=True)

    def _logger(self, addr: str, lines: list[str]):
        def log(line: str) -> None:
            lines.append(line)
            self.reporter.log(addr, line)

        return log

    def _finish(self, result: TargetResult) -> None:
        with self._lock:
            self.results[result.target] = result
            self._explained.clear()  # a recorded result may change what explain says
        self.reporter.finish(result)

    def _run_one(self, addr: str) -> None:
        started = time.perf_counter()
        t, rule, key, files, params, deps = self._keyed(addr)
        env = self.ctx.env(t.env)
        if not rule.cacheable:
            entry, _ = self._act(t, rule, key, env, files, params, deps)
            self._finish(self._result(t, "built", entry, key, time.perf_counter() - started, None))
            return
        with self._key_lock(key):  # one action key runs once, however many targets share it
            entry, source = self.cache.lookup(key, _shape_check(rule, addr), needs_signature(rule), _output_check(rule, files))
            status = "cached"
            if entry is None:
                entry, source = self._act(t, rule, key, env, files, params, deps)
                status = "cached" if source == "remote" else "built"
                self._ran.setdefault(key, addr)
            result = self._result(t, status, entry, key, time.perf_counter() - started, source)
            if rule.deliver is not None:  # in the key's lock: envs sharing an image push it once
                result = self._delivered(t, rule, result, env, files, params, deps, started)
        if status == "cached" and self._ran.get(key, addr) != addr:  # it waited for the target that ran its key
            result = replace(result, meta={**result.meta, "waited_for": self._ran[key]})
        self._finish(result)

    def _keyed(self, addr: str):
        """(target, rule, action key, input files, params, dependency results) of a
        target whose dependencies have finished; the key's document is remembered
        for `explain`."""
        t = self.graph.targets[addr]
        self.reporter.begin(addr)
        deps = {d: self.results[d] for d in self.graph.edges.get(addr, ())}
        doc, files, params = self.key_document(t, {d: r.digest for d, r in deps.items()})
        encoded = canonical_json(doc)
        key = sha256_hex(encoded)  # key_of(doc)
        self._remember_inputs(addr, key, encoded)
        return t, self.graph.rules[t.kind], key, files, params, deps

    def _workdir(self, kind: str) -> Path:
        tmp_root = self.ctx.store.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp_root))

    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _request(self, t: Target, env, files, params, deps, workdir: Path, log) -> Request:
        return Request(t.address, env, files, params, deps, workdir, log, root=self.ctx.root,
                       state=self._read_state, secrets=dict(self.secrets.get(t.kind) or {}),
                       user_code=self.ctx.user_code, session=self._session(t.kind))

    def _session(self, kind: str):
        """The kind's object for this run (`Rule.session`), made on first use."""
        make = self.graph.rules[kind].session
        if make is None:
            return None
        with self._lock:
            if kind not in self._sessions:
                self._sessions[kind] = make()
            return self._sessions[kind]

    def _delivered(self, t: Target, rule, result: TargetResult, env, files, params, deps, started: float) -> TargetResult:
        """`result` with the fields the rule's `deliver` step returns (a push: run every
        run, hit or miss, never stored); its log lines are added to the target's log."""
        lines: list[str] = []
        workdir = self._workdir(t.kind)
        try:
            req = self._request(t, env, files, params, deps, workdir, self._logger(t.address, lines))
            fields = dict(rule.deliver(req, dict(result.meta)))
        except FlyteBuildError:
            raise
        except Exception as exc:  # as in _act: a rule's own bug keeps its traceback in the log
            lines.append(traceback.format_exc())
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._write_log(t.address, lines, append=True)
            shutil.rmtree(workdir, ignore_errors=True)
        digest = fields.pop("digest", result.digest)
        explain_mod.remember_delivered(self.ctx, t.address, result.key, digest)
        return replace(result, digest=digest, meta={**result.meta, **fields}, seconds=time.perf_counter() - started)

    def _act(self, t: Target, rule, key: str, env, files, params, deps) -> tuple[ActionEntry, str | None]:
        """Run the rule (its remote check first) in a fresh work directory; store
        what it produced. (entry, "remote" when the remote check had it, else None)."""
        lines: list[str] = []
        log = self._logger(t.address, lines)
        workdir = self._workdir(t.kind)
        try:
            if rule.remote_check is not None:
                # a result that lives outside the cache (an image already in the registry)
                produced = rule.remote_check(self._request(t, env, files, params, deps, workdir, log))
                if produced is not None:
                    return self._store(t.address, key, produced), "remote"
            try:
                produced = rule.run(self._request(t, env, files, params, deps, workdir, log))
            except FlyteBuildError:
                raise
            except Exception as exc:  # a rule's own bug: keep the traceback in the log
                lines.append(traceback.format_exc())
                raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
            finally:
                self._write_log(t.address, lines)
            self._write_state(produced.state)
            if rule.cacheable:
                return self._store(t.address, key, produced), None
            return ActionEntry(key=key, target=t.address, outputs=(), meta=produced.meta), None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _read_state(self, name: str):
        """A rule's state document (see Produced.state), None if absent or unreadable."""
        doc = self.ctx.store.read_json(f"state/{_state_name(name)}")
        return doc if isinstance(doc, dict) else None

    def _write_state(self, docs) -> None:
        for name, doc in docs:
            self.ctx.store.write_json(f"state/{_state_name(name)}", doc)

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
    def _remember_inputs(self, addr: str, key: str, encoded_doc: bytes) -> None:
        explain_mod.remember_inputs(self.ctx, addr, key, encoded_doc)

    def _write_log(self, addr: str, lines: list[str], append: bool = False) -> str | None:
        return self.ctx.store.write_log(addr, lines, append) if lines else None

    def explain(self, addr: str) -> dict:
        """Why `addr` would rebuild: the inputs that differ from its last build
        (a report of this run's memo: callers must not change it)."""
        report = self._explained.get(addr)
        if report is None:
            report = self._explained[addr] = self._explain(addr)
        return report

    def _explain(self, addr: str) -> dict:
        return explain_mod.report(self, addr)


def _state_name(name: str) -> str:
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"a rule's state name must be a relative path: {name!r}")
    return name


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


def needs_signature(rule) -> bool:
    """Whether a shared entry of `rule` is used only when signed and verified: when
    the rule says so, and for every rule that cannot check a shared result against
    the reader's own inputs (`verify_shared`), a repository's own rules included.
    So by default nothing unsigned from the shared cache changes what is built."""
    return rule.needs_signature or rule.verify_shared is None


def _output_check(rule, files):
    """The rule's check of a shared entry's outputs against these inputs, or None."""
    if rule.verify_shared is None:
        return None
    return lambda outputs: rule.verify_shared(files, outputs)


OnResult = Callable[[TargetResult], None]
