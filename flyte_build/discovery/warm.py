"""Warm discovery: edits cost what they change (the parent's side).

A `WarmDiscovery` keeps one long-lived discovery child (`warm_child`) with
flyte and every module of the repository imported. Its first discovery is a
cold one (the child does exactly what the cold child does, then stays). On
the next one, `warm_plan.files_to_rerun` tells from what the child recorded (the import
graph, who read which file, directory, stat or variable, which names each
module asked for) and from the files now, which modules must run again: the
changed modules, the modules whose body read what changed, and every module
that imports one of those (with the environments they may have touched). The
child forks and the fork runs only those again (see `warm_child`); the
result is the one a cold discovery gives.

Whatever the plan cannot vouch for starts a new warm child, which is a cold
discovery (`why` says what it was): a variable read while flyte started, a
read by code outside the repository or outside any import, an added file that
is a module loaded already, other settings. A fork whose result is not clean
(a load failure, duplicates, an order-dependent load) hands over to the cold
child once: the warm child stays for the next edit.

A process that runs each command in a fork of itself (the resident process)
makes the `WarmDiscovery` before it forks, with a `handle` file: the warm
child a command starts outlives that command (it watches the process that
made the `WarmDiscovery`, not its parent), and the next command finds it
through the handle (its socket, its pid, the snapshot).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import warm_plan
from .. import atomic
from ..config import interpreter
from ..errors import UserError
from ..processes import children


@dataclass
class _Child:
    """A running warm child: where to reach it and what it was imported from."""

    key: str
    pid: int
    tmp: str
    snap: warm_plan.Snapshot
    proc: subprocess.Popen | None = None  # when this process started it
    conn: socket.socket | None = None
    n: int = 0

    def connect(self) -> bool:
        if self.conn is None:
            try:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(os.path.join(self.tmp, "ctl"))
            except OSError:
                return False
            self.conn, self.reader = conn, conn.makefile("rb")
        return True

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return not (self.proc is not None and children._exited(self.pid))

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
        if self.proc is not None:
            children.finish(self.proc)
        else:  # started by an earlier command: its own session, whose id is its pid
            children.end_tree(self.pid)
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


class WarmDiscovery:
    """One repository's warm discovery child (one discovery at a time).

    `discovery.discover.discover(..., warm=w)` asks it where it would start a
    discovery child; `why` says why the last discovery was not served by a fork
    (None when it was); `close()` ends the child and everything below it.
    `handle`: a file (in a private directory) through which the commands a
    resident process forks share the warm child; made in the resident process."""

    def __init__(self, handle: str | None = None):
        self._child: _Child | None = None
        self.why: str | None = None
        self.handle = handle
        self.owner = os.getpid()

    def close(self) -> None:
        child = self._child or self._adopted()
        self._child = None
        if child is not None:
            child.close()
        if self.handle:
            try:
                os.unlink(self.handle)
            except OSError:
                pass

    def run(self, cfg, request: dict, key: str, digests, while_waiting=None) -> tuple[dict | None, str]:
        """(the discovery child's result, "warm" when a fork gave it, else "full");
        (None, "full") when the caller's cold child is to give it."""
        environ = children.child_environ()
        child = self._child or self._adopted(_timeout(cfg))
        why = "first discovery: starting the warm child"
        if child is not None and child.key != key:
            why = "the settings changed (interpreter, flyte, selection, project, domain or flyte's config)"
        elif child is not None and not (child.alive() and child.connect()):
            why = "the warm child had ended"
        elif child is not None:
            self._child = child
            got = warm_plan.files_to_rerun(child.snap, str(cfg.root), request["files"], digests, environ)
            if not isinstance(got, str):
                return self._served(cfg, child, request, got, environ)
            why = got
        self._child = child
        self.close()
        self.why = why
        return self._start(cfg, request, key, digests, environ, while_waiting), "full"

    def _adopted(self, wait: float | None = None) -> _Child | None:
        """The warm child an earlier command left, from the handle (None: none, or
        unreadable). While one is still starting in the background (`prestart`),
        waits for it up to `wait` seconds."""
        if not self.handle:
            return None
        d = _handle(self.handle)
        if d.get("pending"):
            d = _after_pending(self.handle, d, time.monotonic() + (wait or 0.0))
        try:
            return _Child(d["key"], int(d["pid"]), d["tmp"], warm_plan.snapshot_from_json(d["snap"]))
        except (ValueError, KeyError, TypeError):
            return None

    def prestart(self, cfg, request: dict, key: str, digests) -> None:
        """A discovery the cache answered (no child ran): start the warm child in the
        background, so that the next edit finds it (a resident process's only: the
        handle hands it over). A helper process started here launches it, waits for
        it and writes the handle; the next discovery waits for the helper meanwhile.
        Nothing when a warm child runs or is starting, or when one for `key`
        could not serve edits (the handle says so)."""
        if not self.handle or os.getpid() == self.owner:
            return
        d = _handle(self.handle)
        if _alive(d.get("pid")) or _alive(d.get("pending")) or (d.get("key") == key and d.get("unwarm")):
            return  # one runs (for these settings or others: the next discovery decides), or cannot
        from . import warm_prestart

        warm_prestart.spawn(self, cfg, request, key, digests)

    def _served(self, cfg, child: _Child, request: dict, redo: set[str], environ: dict) -> tuple[dict | None, str]:
        raw = self._fork(cfg, child, request, redo, environ)
        if raw is None:
            return None, "full"
        why = warm_plan.unclean(raw)
        if why:
            self.why = f"{why}: a cold child gives the result"
            return None, "full"
        self.why = None
        return raw, "warm"

    def _start(self, cfg, request: dict, key: str, digests, environ: dict, while_waiting) -> dict:
        tmp = tempfile.mkdtemp(prefix="flyte-build-warm-")
        try:
            child, raw, why = _launch(cfg, {**request, "owner": self.owner}, key, digests, environ, while_waiting, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._child = child
        if why:
            self.why = f"{self.why}; the new warm child cannot serve edits: {why}"
            if self.handle:  # no background start for these settings again (see prestart)
                atomic.write_bytes(self.handle, json.dumps({"key": key, "unwarm": why}).encode())
        elif self.handle:
            write_handle(self.handle, key, child)
        return raw

    def _fork(self, cfg, child: _Child, request: dict, redo: set[str], environ: dict) -> dict | None:
        child.n += 1
        tag = f"{os.getpid()}-{child.n}"
        result = os.path.join(child.tmp, f"fork-{tag}.json")
        progress = os.path.join(child.tmp, f"progress-{tag}")
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


# The resident process's WarmDiscovery for its repository (made there, with a
# handle, before it forks a command); `Workspace` uses it when given none.
RESIDENT: WarmDiscovery | None = None


def write_handle(path: str, key: str, child: _Child) -> None:
    """The handle through which the next command finds `child`."""
    atomic.write_bytes(path, json.dumps({"key": key, "pid": child.pid, "tmp": child.tmp,
                                         "snap": warm_plan.snapshot_to_json(child.snap)}).encode())


def _handle(path: str) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _alive(pid) -> bool:
    if pid is None:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:
        pass
    return True


def _after_pending(path: str, d: dict, deadline: float) -> dict:
    """The handle once the background start it names is done (or its helper gone)."""
    while d.get("pending") and _alive(d["pending"]) and time.monotonic() < deadline:
        time.sleep(0.02)
        d = _handle(path)
    return {} if d.get("pending") else d



def _timeout(cfg) -> float:
    from .child_run import timeout_of

    return timeout_of(cfg)


def _launch(cfg, request: dict, key: str, digests, environ: dict, while_waiting, tmp: str):
    """Start a warm child on the request: (the child or None when it cannot serve edits, its result, why not)."""
    root = str(cfg.root)
    req_path, res_path, progress = (os.path.join(tmp, n) for n in ("request.json", "result.json", "progress"))
    request = {**request, "progress": progress}
    if while_waiting is not None:  # it compiles the candidates for the child (discovery_code)
        request["handed"] = os.path.join(tmp, "code")
        open(request["handed"], "wb").close()
    Path(req_path).write_text(json.dumps(request))
    lib = children.stage_package(tmp)
    cmd = children.command(interpreter.of(cfg, None).path, lib, children.own_script(lib, "discovery/warm_child.py"),
                           req_path, res_path, os.path.join(tmp, "ctl"))
    with open(os.path.join(tmp, "output.log"), "wb") as log:
        proc = children.start(cmd, root, environ, log, subprocess.STDOUT)
    try:
        started, timeout = time.monotonic(), _timeout(cfg)
        if while_waiting is not None:
            while_waiting(request)
        _await(res_path + ".warm", proc, started, timeout, progress)
        raw = json.loads(Path(res_path).read_text())
        record = json.loads(Path(res_path + ".warm").read_text())
    except BaseException:
        children.finish(proc)
        raise
    if not record.get("ready"):
        children.finish(proc)
        return None, raw, record.get("why") or "it did not say why"
    snap = warm_plan.snapshot(root, raw, record, request["files"], digests, environ)
    child = _Child(key, proc.pid, tmp, snap, proc)
    if not child.connect():
        child.close()
        return None, raw, "its socket did not answer"
    return child, raw, None


def _await(record: str, proc: subprocess.Popen, started: float, timeout: float, progress: str) -> None:
    """Until the warm child has written its result and record; a UserError as the cold
    child's when it times out or ends without them."""
    delay = 0.001
    while not os.path.exists(record):
        if children._exited(proc.pid):
            proc.wait()
            log = os.path.join(os.path.dirname(progress), "output.log")
            output = Path(log).read_bytes().decode(errors="replace") if os.path.exists(log) else ""
            raise UserError(children._no_result("discovery", proc.returncode, output, progress))
        if time.monotonic() - started > timeout:
            raise UserError(children._timed_out("discovery", timeout, progress))
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
