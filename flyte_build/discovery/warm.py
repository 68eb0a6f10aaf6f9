"""Warm discovery: edits cost what they change (the parent's side).

A `WarmDiscovery` keeps one long-lived discovery child (`warm_child`) with
flyte and every module of the repository imported. Its first discovery is a
cold one (the child does exactly what the cold child does, then stays). On
the next one, `plan` tells from what the child recorded (the import graph,
who read which file, directory, stat or variable, which names each module
asked for) and from the files now, which modules must run again: the changed
modules, the modules whose body read what changed, and every module that
imports one of those (with the environments they may have touched). The
child forks and the fork runs only those again (see `warm_child`); the
result is the one a cold discovery gives.

Whatever `plan` cannot vouch for starts a new warm child, which is a cold
discovery (`why` says what it was): a variable read while flyte started, a
read outside any module body of the repository, an added file that is a
module loaded from elsewhere, other settings. A fork whose result is not
clean (a load failure, duplicates, an order-dependent load) hands over to
the cold child once: the warm child stays for the next edit.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import reads as discovery_reads
from ..archives.bundle_files import STANDARD_IGNORED_DIRS
from ..config import interpreter
from ..errors import UserError
from ..processes import children
from ..reach import reachable
from ..stores.file_digests import RACY_SECONDS

_STARTUP_PREFIXES = ("PYTHON", "LD_")  # read by the interpreter and the loader before any Python runs


@dataclass(frozen=True)
class Snapshot:
    """What the warm child's modules were imported from, as the parent saw it right after."""

    files: dict  # loaded user file (relative) -> digest (None: missing)
    candidates: frozenset
    graph: dict  # user file -> the user files its load imported
    env_files: frozenset  # files that define an environment
    reads: dict  # (kind, value) -> (what it gave then, {module body (relative) or None})
    readers: dict  # module body -> the user files whose functions read for it (they may keep what they read)
    startup: dict  # variable -> env_value, read before the user's modules ran
    py_files: frozenset  # every .py file under the root
    dirs: dict  # directory -> mtime_ns (None: too recent to trust)
    refs: dict  # user file -> {module names its body asked for}
    modules: frozenset  # every module name loaded in the warm child
    search: tuple  # the sys.path directories under the root, absolute


def _read_now(kind: str, value: str, digests, environ) -> str | None:
    if kind == "files":
        return discovery_reads._file_digest(value, digests)
    if kind == "dirs":
        return discovery_reads._listing(value)
    if kind == "stats":
        return discovery_reads._kind(value)
    return discovery_reads.env_value(value, environ)


def _py_files(root: str) -> tuple[frozenset, dict]:
    """Every .py file under the root (relative) and the mtime of each directory listed."""
    files, dirs = set(), {}
    fresh = time.time_ns() - int(RACY_SECONDS * 1e9)
    for d, subdirs, names in os.walk(root):
        try:
            m = os.stat(d).st_mtime_ns
        except OSError:
            m = None
        rel = os.path.relpath(d, root)
        dirs[rel] = m if m is not None and m < fresh else None
        subdirs[:] = sorted(s for s in subdirs if s not in STANDARD_IGNORED_DIRS and not s.endswith(".egg-info"))
        files.update(os.path.normpath(os.path.join(rel, n)) for n in names if n.endswith(".py"))
    return frozenset(files), dirs


def _dirs_unchanged(root: str, dirs: dict) -> bool:
    for rel, m in dirs.items():
        try:
            if m is None or os.stat(os.path.join(root, rel)).st_mtime_ns != m:
                return False
        except OSError:
            return False
    return True


def _startup_names(names, environ) -> set[str]:
    return set(names) | {n for n in environ if n.startswith(_STARTUP_PREFIXES)}


def snapshot(root: str, raw: dict, record: dict, candidates, digests, environ) -> Snapshot:
    """The snapshot of a warm child that has just written its result `raw` and `record`."""
    files = {}
    for rel in raw.get("loaded_files", ()):
        files[rel] = discovery_reads._file_digest(os.path.join(root, rel), digests)
    reads: dict = {}
    readers: dict = {}
    for kind, value, body, charged in record["reads"]:
        reads.setdefault((kind, value), set()).add(body)
        if body and charged and charged != body:
            readers.setdefault(body, set()).add(charged)
    reads = {k: (_read_now(*k, digests, environ), frozenset(v)) for k, v in reads.items()}
    py, dirs = _py_files(root)
    startup = {n: discovery_reads.env_value(n, environ) for n in _startup_names(record["startup_environ"], environ)}
    return Snapshot(files, frozenset(candidates), {f: list(v) for f, v in (raw.get("graph") or {}).items()},
                    frozenset(f for _, f in raw.get("all_envs") or ()), reads, {b: sorted(c) for b, c in readers.items()},
                    startup, py, dirs,
                    {f: frozenset(v) for f, v in record["refs"].items()}, frozenset(record["modules"]),
                    tuple(record["sys_path"]))


def _names_of(rel: str, root: str, search: tuple) -> set[str]:
    """The module names a file under the root can be imported as (from each sys.path directory)."""
    path = os.path.join(root, rel)
    out = set()
    for d in search:
        if path.startswith(d.rstrip("/") + "/"):
            parts = Path(os.path.relpath(path, d)).with_suffix("").parts
            if parts and parts[-1] == "__init__":
                parts = parts[:-1]
            if parts:
                out.add(".".join(parts))
    return out


def plan(snap: Snapshot, root: str, candidates, digests, environ) -> set[str] | str:
    """The user files to run again for the tree now, or why the warm child cannot serve it."""
    for n in sorted(_startup_names(snap.startup, environ)):
        if discovery_reads.env_value(n, environ) != snap.startup.get(n):
            return f"environment variable {n} changed (read before any module ran)"
    changed = {f for f, d in snap.files.items() if discovery_reads._file_digest(os.path.join(root, f), digests) != d}
    for (kind, value), (then, bodies) in sorted(snap.reads.items(), key=lambda kv: kv[0]):
        if _read_now(kind, value, digests, environ) != then:
            if None in bodies:
                return (f"{value} ({kind}) changed: it was read by code outside the repository (which may keep "
                        "what it read) or outside the import of any module")
            changed |= bodies
    changed |= snap.candidates - set(candidates)  # no longer a candidate: a cold child would not import it
    py = snap.py_files if _dirs_unchanged(root, snap.dirs) else _py_files(root)[0]
    for rel in sorted(py - snap.py_files):
        names = _names_of(rel, root, snap.search)
        clash = names & snap.modules
        if clash:
            return f"added {rel} is module {min(clash)}, loaded already (a namespace package, or from another directory)"
        changed |= {f for f, asked in snap.refs.items() if names & asked}
    return _closure(snap, changed)


def _closure(snap: Snapshot, changed: set[str]) -> set[str]:
    """`changed` and every module importing one; and where such a module may have
    touched an environment (a task added to it), the environment's module too; and
    where its body read through another module's function (which may have kept
    what it read: a cache), that module too, so that it reads afresh."""
    importers_of: dict[str, list[str]] = {}
    for src, dsts in snap.graph.items():
        for d in dsts:
            importers_of.setdefault(d, []).append(src)
    redo = reachable(changed, importers_of)
    while True:
        touched = reachable(redo, snap.graph) & snap.env_files
        touched |= {c for b in redo for c in snap.readers.get(b, ())}
        need = reachable(touched, importers_of)
        if need <= redo:
            return redo
        redo |= need


def unclean(raw: dict) -> str | None:
    """Why a fork's result may not stand for the cold child's (None: it may)."""
    if raw.get("failures") or raw.get("problems"):
        return "a module failed to load"
    if raw.get("duplicates"):
        return "two environments have one name"
    if not raw.get("incremental_ok"):
        return "the load depended on the order of the imports, or a module read what it had cached"
    return None


class _Child:
    """A running warm child."""

    def __init__(self, key: str, proc: subprocess.Popen, tmp: str, conn: socket.socket, snap: Snapshot):
        self.key, self.proc, self.tmp, self.conn, self.snap = key, proc, tmp, conn, snap
        self.reader = conn.makefile("rb")
        self.n = 0

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass
        children.finish(self.proc)
        shutil.rmtree(self.tmp, ignore_errors=True)


class WarmDiscovery:
    """One repository's warm discovery child (one discovery at a time; see the module's doc).

    `discovery.discover(..., warm=w)` asks it where it would start a discovery
    child; `why` says why the last discovery was not served by a fork (None when
    it was); `close()` ends the child and everything below it."""

    def __init__(self):
        self._child: _Child | None = None
        self.why: str | None = None

    def close(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.close()

    def run(self, cfg, request: dict, key: str, digests, while_waiting=None) -> tuple[dict | None, str]:
        """(the discovery child's result, "warm" when a fork gave it, else "full");
        (None, "full") when the caller's cold child is to give it."""
        environ = children.child_environ()
        child = self._child
        why = "first discovery: starting the warm child"
        if child is not None and child.key != key:
            why = "the settings changed (interpreter, flyte, selection, project, domain or flyte's config)"
        elif child is not None and children._exited(child.proc.pid):
            why = "the warm child had ended"
        elif child is not None:
            got = plan(child.snap, str(cfg.root), request["files"], digests, environ)
            if not isinstance(got, str):
                return self._served(cfg, child, request, got, environ)
            why = got
        self.close()
        self.why = why
        return self._start(cfg, request, key, digests, environ, while_waiting), "full"

    def _served(self, cfg, child: _Child, request: dict, redo: set[str], environ: dict) -> tuple[dict | None, str]:
        raw = self._fork(cfg, child, request, redo, environ)
        if raw is None:
            return None, "full"
        why = unclean(raw)
        if why:
            self.why = f"{why}: a cold child gives the result"
            return None, "full"
        self.why = None
        return raw, "warm"

    def _start(self, cfg, request: dict, key: str, digests, environ: dict, while_waiting) -> dict:
        tmp = tempfile.mkdtemp(prefix="flyte-build-warm-")
        try:
            child, raw, why = _launch(cfg, request, key, digests, environ, while_waiting, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._child = child
        if why:
            self.why = f"{self.why}; the new warm child cannot serve edits: {why}"
        return raw

    def _fork(self, cfg, child: _Child, request: dict, redo: set[str], environ: dict) -> dict | None:
        child.n += 1
        result = os.path.join(child.tmp, f"fork-{child.n}.json")
        progress = os.path.join(child.tmp, f"progress-{child.n}")
        msg = {"op": "discover", "request": {**request, "progress": progress}, "files": sorted(redo),
               "environ": environ, "result": result}
        timeout = _timeout(cfg)
        try:
            child.conn.settimeout(timeout)
            child.conn.sendall(json.dumps(msg).encode() + b"\n")
            line = child.reader.readline()
        except (socket.timeout, TimeoutError):
            self.close()
            raise UserError(children._timed_out("discovery", timeout, progress)) from None
        except OSError:
            line = b""
        try:
            if not line:
                self.close()
                self.why = "the warm child had ended"
                return None
            if json.loads(line).get("exit") != 0 or not os.path.exists(result):
                self.why = "the warm child's fork ended without a result: a cold child reports why"
                return None
            return json.loads(Path(result).read_text())
        finally:
            for p in (result, progress):
                try:
                    os.unlink(p)
                except OSError:
                    pass


def _timeout(cfg) -> float:
    from .discover import timeout_of

    return timeout_of(cfg)


def _launch(cfg, request: dict, key: str, digests, environ: dict, while_waiting, tmp: str):
    """Start a warm child on the request: (the child or None when it cannot serve edits, its result, why not)."""
    root = str(cfg.root)
    sock_path = os.path.join(tmp, "ctl")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)
    req_path, res_path, progress = (os.path.join(tmp, n) for n in ("request.json", "result.json", "progress"))
    request = {**request, "progress": progress}
    if while_waiting is not None:  # it compiles the candidates for the child (discovery_code)
        request["handed"] = os.path.join(tmp, "code")
        open(request["handed"], "wb").close()
    Path(req_path).write_text(json.dumps(request))
    lib = children.stage_package(tmp)
    cmd = children.command(interpreter.of(cfg, None).path, lib, children.own_script(lib, "discovery/warm_child.py"),
                           req_path, res_path, sock_path)
    with open(os.path.join(tmp, "output.log"), "wb") as log:
        proc = children.start(cmd, root, environ, log, subprocess.STDOUT)
    conn = None
    try:
        started, timeout = time.monotonic(), _timeout(cfg)
        if while_waiting is not None:
            while_waiting(request)
        conn = _accept(listener, proc, started, timeout, progress)
        conn.settimeout(max(1.0, started + timeout - time.monotonic()))
        ready = json.loads(conn.makefile("rb").readline() or b"{}").get("ready")
        raw = json.loads(Path(res_path).read_text())
        record = json.loads(Path(res_path + ".warm").read_text())
    except BaseException:
        if conn is not None:
            conn.close()
        children.finish(proc)
        raise
    finally:
        listener.close()
    if not ready:
        conn.close()
        children.finish(proc)
        return None, raw, record.get("why") or "it did not say why"
    snap = snapshot(root, raw, record, request["files"], digests, environ)
    return _Child(key, proc, tmp, conn, snap), raw, None


def _accept(listener: socket.socket, proc: subprocess.Popen, started: float, timeout: float,
            progress: str) -> socket.socket:
    """The warm child's connection, once it has written its result; a UserError as the cold child's
    when it times out or ends without one."""
    listener.settimeout(0.02)
    while True:
        try:
            conn, _ = listener.accept()
            return conn
        except (socket.timeout, TimeoutError):
            pass
        if children._exited(proc.pid):
            proc.wait()
            log = os.path.join(os.path.dirname(progress), "output.log")
            output = Path(log).read_bytes().decode(errors="replace") if os.path.exists(log) else ""
            raise UserError(children._no_result("discovery", proc.returncode, output, progress))
        if time.monotonic() - started > timeout:
            raise UserError(children._timed_out("discovery", timeout, progress))
