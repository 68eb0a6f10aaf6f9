"""The daemon: one per repository (and Python, and copy of flyte-build),
started by the first client that finds none.

It takes a lock beside its socket (a second daemon racing it exits at once),
imports flyte-build's modules and built-in rules, binds the socket owner-only
and serves commands one at a time: each runs in a fork (see `runner`), later
ones wait in a queue. Before each command it checks that flyte-build's files
and the interpreters it serves are the ones it started with; if not it tells
the client to start a fresh daemon and exits. It exits after `idle_timeout`
seconds without a command, on `flyte-build daemon stop`, and on SIGTERM; a
SIGKILL loses nothing either (a fork still running gets SIGTERM, and the next
client finds the stale socket and starts another).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time

from .. import atomic
from . import peer, protocol, runner, stamps, tree_watch
from .address import identity, reachable
from .daemon_log import Log
from .noop_answers import NoopAnswers

SELF_CHECK = 5.0  # seconds between an idle daemon's checks of flyte-build's own files (~150 stats)

# imported once here, so a command's fork starts with them; none of them reads
# the environment at import (the stores' libraries do, so they stay out)
WARM = (
    "flyte_build.cli", "flyte_build.commands.common", "flyte_build.workspace", "flyte_build.engine.executor",
    "flyte_build.engine.context", "flyte_build.engine.graph", "flyte_build.discovery.discover",
    "flyte_build.config.settings", "flyte_build.stores.snapshot", "flyte_build.discovery.warm",
    "flyte_build.progress", "flyte_build.render",
    "flyte_build.stores.signing", "flyte_build.stores.shared_cache", "flyte_build.stores.documents",
    "flyte_build.stores.maintenance", "flyte_build.stores.build_manifest", "flyte_build.stores.local_store",
    "flyte_build.stores.two_tier_cache", "flyte_build.stores.file_digests",
    "rich.console", "rich.table", "rich.text", "pathspec", "typing_extensions",
    "cryptography.hazmat.primitives.asymmetric.ed25519", "importlib.metadata", "csv", "email.parser",
    "argparse", "json", "hashlib", "concurrent.futures", "ctypes", "tarfile", "gzip", "zlib",
)


LOCK_WAIT = 2.0


def main() -> None:
    path, project, idle = sys.argv[1], sys.argv[2], float(sys.argv[3])
    lock = _lock(path)
    if lock is None:  # another daemon holds this repository
        return
    log = Log(path[: -len(".sock")] + ".log")
    try:
        source = stamps.source()  # before the imports: an edit during them makes this daemon stale
        _warm()
        daemon = Daemon(path, project, idle, lock, log, source)
        _hold_warm_discovery(path)
    except Exception as exc:  # its client runs the command itself; the reason stays here
        log.write(f"could not start: {type(exc).__name__}: {exc}")
        sys.exit(1)
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        daemon.serve()
    except Terminated:
        daemon.stop("SIGTERM")
    finally:
        daemon.close()


class Terminated(Exception):
    pass


def _terminated(*_) -> None:
    raise Terminated


def _lock(path: str) -> int | None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.stat(directory).st_uid == os.getuid():
        os.chmod(directory, 0o700)  # made wider by someone: ours again (another user's: binding fails)
    fd = os.open(path[: -len(".sock")] + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    # a daemon that is exiting holds it a moment longer than its socket: wait
    # that out; a live daemon holds it for good, and this one then gives way
    try:
        if atomic.flock_within(fd, LOCK_WAIT, 0.02):
            return fd
    except OSError:
        pass  # a lock this file system cannot take: give way as to a live daemon
    os.close(fd)
    return None


def _warm() -> None:
    import gc
    import importlib

    for name in WARM:
        importlib.import_module(name)
    from .. import cli
    from ..engine import rulesets

    cli.parser()
    rulesets.builtin_rules()
    # rich's width table (the latest; which one a command uses is still its own
    # $UNICODE_VERSION's choice: nothing is called here that caches it)
    from rich._unicode_data._versions import VERSIONS

    importlib.import_module(".unicode" + VERSIONS[-1].replace(".", "-"), "rich._unicode_data")
    os.chdir("/")
    # what the forks share stays out of the collector's way: no copy-on-write of every page
    gc.freeze()


def _hold_warm_discovery(path: str) -> None:
    """The repository's warm discovery child, shared by the commands' forks
    through a handle file beside the socket (see discovery.warm): set before
    the first fork, closed when the daemon stops."""
    from ..discovery import warm

    warm.RESIDENT = warm.WarmDiscovery(handle=path[: -len(".sock")] + ".warm.json")


def _drop_warm_discovery() -> None:
    from ..discovery import warm

    resident, warm.RESIDENT = getattr(warm, "RESIDENT", None), None
    if resident is not None:
        try:
            resident.close()
        except Exception:  # it is ending anyway: its child watches this process
            pass


def _watch_tree(project: str, cache: str, log: Log) -> tree_watch.TreeWatch:
    """The project's watch (see tree_watch), shared with the commands' forks
    as `tree_watch.RESIDENT`; the cache directory's own writes stay out of it."""
    limit = os.environ.get("FLYTE_BUILD_WATCH_MAX_DIRS", "")
    watch = tree_watch.TreeWatch(project, skip=(cache,), max_dirs=int(limit) if limit.isdigit() else tree_watch.MAX_DIRS)
    if watch.failed:
        log.write(f"not watching {project}: {watch.failed} (every no-op stats the tree)")
    tree_watch.RESIDENT = watch
    return watch


def _bind(path: str) -> socket.socket:
    try:
        os.unlink(path)  # a stale socket: we hold the lock, so its daemon is gone
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    where, fd = reachable(path)
    mask = os.umask(0o177)
    try:
        listener.bind(where)
    finally:
        os.umask(mask)
        if fd is not None:
            os.close(fd)
    os.chmod(path, 0o600)
    listener.listen(64)
    return listener


class Running:
    def __init__(self, pid: int, conn: socket.socket | None):
        self.pid, self.conn, self.started = pid, conn, time.monotonic()
        self.pidfd = os.pidfd_open(pid)


class Daemon:
    def __init__(self, path: str, project: str, idle: float, lock: int, log: Log, source: tuple):
        self.path, self.project, self.idle, self.lock, self.log = path, project, idle, lock, log
        self.identity = identity(project)
        self.source = source
        self.interpreters: dict = {}
        self.started, self.last_active, self.served = time.time(), time.monotonic(), 0
        self.running: Running | None = None
        self.queue: list[tuple[socket.socket, dict, list[int]]] = []
        self.stopping: str | None = None
        # before the socket: no client reads a generation older than the watches
        self.watch = _watch_tree(project, os.path.dirname(os.path.dirname(path)), log)
        self.noop = NoopAnswers(self.watch)
        self.listener = _bind(path)
        self.log.write(f"started pid {os.getpid()} for {project} with {sys.executable}, idle timeout {idle:g} s")

    def serve(self) -> None:
        while not self.stopping:
            watched = [self.listener] + ([self.watch] if self.watch.fd >= 0 else [])
            if self.running:
                watched += [self.running.pidfd] + ([self.running.conn] if self.running.conn else [])
            busy = self.running or self.queue
            left = self.last_active + self.idle - time.monotonic()
            timeout = None if busy else max(0.0, min(left, SELF_CHECK))
            try:
                ready, _, _ = select.select(watched, [], [], timeout)
            except InterruptedError:
                continue
            if not ready and not busy:
                self.stopping = f"idle for {self.idle:g} s" if left <= SELF_CHECK else self._outdated()
                if self.stopping:
                    break
            if self.watch in ready:
                self.watch.pump()
            if self.running and self.running.pidfd in ready:
                self._finish()
            if self.running and self.running.conn in ready:
                self._client_says()
            if self.listener in ready:
                self._accept()
            if not self.running and self.queue and not self.stopping:
                self._start_next()

    def stop(self, why: str) -> None:
        self.stopping = why
        if self.running:
            os.kill(self.running.pid, signal.SIGTERM)

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        why = peer.refusal(conn, os.getuid())
        if why:
            self.log.write(f"refused a connection: {why}")
            _reply(conn, {"refused": why})
            conn.close()
            return
        conn.settimeout(5)
        try:
            message, fds = protocol.receive(conn, with_fds=True)
        except (OSError, EOFError, ValueError):
            conn.close()
            return
        conn.settimeout(None)
        op = message.get("op")
        if op == "run" and len(fds) == 3:
            self.queue.append((conn, message, fds))
            return
        protocol._close(fds)
        if op in ("unchanged", "verified"):
            self._noop(conn, message)
        elif op == "status":
            _reply(conn, self.status())
        elif op == "stop":
            _reply(conn, {"stopping": os.getpid()})
            self.stop("stopped by `flyte-build daemon stop`")
        else:
            _reply(conn, {"refused": f"unknown request {op!r}"})
        conn.close()

    def _start_next(self) -> None:
        conn, message, fds = self.queue.pop(0)
        stale = self._stale(message)
        if stale:
            self.stop(stale)
            self.queue.insert(0, (conn, message, fds))  # each waiting client starts the next daemon
            return
        self.idle = float(message.get("idle_timeout") or self.idle)
        self.watch.pump()  # the fork's view (tree_watch.RESIDENT) is the parent's as of now
        close = [self.listener.fileno(), self.lock, conn.fileno(), *([self.watch.fd] if self.watch.fd >= 0 else []), *(c.fileno() for c, _, _ in self.queue),
                 *(fd for _, _, queued in self.queue for fd in queued)]
        pid = runner.start(message, fds, close)
        del message  # nothing of a request's environment outlives it here
        self.running = Running(pid, conn)
        if not _reply(conn, {"started": pid}):
            self.running.conn = None
            conn.close()
            os.kill(pid, signal.SIGTERM)

    def _noop(self, conn: socket.socket, message: dict) -> None:
        """A no-op's question (see noop_answers): answered at once, even while a command runs."""
        path, sig = message.get("snapshot"), message.get("sig")
        if message.get("op") == "verified":
            generation = message.get("generation")
            if isinstance(generation, int) and message.get("epoch") == self.noop.epoch:
                self.noop.verified_at(path, sig, generation)
            _reply(conn, {"ok": True})
            return
        same, generation = self.noop.unchanged(path, sig) if isinstance(path, str) else (False, self.watch.pump())
        self.last_active = time.monotonic()
        _reply(conn, {"unchanged": same, "generation": generation, "epoch": self.noop.epoch})

    def _outdated(self) -> str | None:
        """An upgrade that changed flyte-build's version is served by a daemon
        of its own (another socket): this one would otherwise wait out its idle
        timeout, never asked again."""
        return "flyte-build's files changed" if stamps.source() != self.source else None

    def _stale(self, message: dict) -> str | None:
        if message.get("identity") != self.identity:
            return "another flyte-build or Python asked"
        if stamps.source() != self.source:
            return "flyte-build's files changed"
        moved = stamps.changed(self.interpreters, stamps.interpreters(self.project, message.get("env") or {}))
        return f"the interpreter {moved} changed" if moved else None

    def _client_says(self) -> None:
        running = self.running
        try:
            message, _ = protocol.receive(running.conn)
        except (OSError, EOFError, ValueError):  # the client is gone: so is its command
            running.conn.close()
            running.conn = None
            _signal(running.pid, signal.SIGTERM)
            return
        if message.get("op") == "signal" and message.get("signal") in _FORWARDED:
            _signal(running.pid, int(message["signal"]))

    def _finish(self) -> None:
        running, self.running = self.running, None
        _pid, status = os.waitpid(running.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        signum = -code if code < 0 else 0  # the client ends by the same signal
        code = 128 + signum if signum else code
        os.close(running.pidfd)
        if running.conn is not None:
            _reply(running.conn, {"exit": code, "signal": signum})
            running.conn.close()
        self.served += 1
        self.last_active = time.monotonic()
        self.log.write(f"command {self.served}: exit {code} in {time.monotonic() - running.started:.3f} s")

    def status(self) -> dict:
        return {
            "pid": os.getpid(), "project": self.project, "python": sys.executable, "version": _version(),
            "uptime": round(time.time() - self.started, 3), "served": self.served, "queued": len(self.queue),
            "command": self.running.pid if self.running else None, "idle_timeout": self.idle,
            "idle_for": 0.0 if self.running else round(time.monotonic() - self.last_active, 3),
            "rss_kb": _rss_kb(), "warm_child": _warm_child(self.path), "watch": self._watch_status(), "packages": sorted({m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names)),
        }

    def _watch_status(self) -> dict:
        w = self.watch
        return {"dirs": len(w.dirs), "generation": w.pump(), "failed": w.failed, "resets": w.resets,
                "last_reset": w.last_reset, "noop_answers": self.noop.answered}

    def close(self) -> None:
        """Give up the socket and the lock first, then tell the waiting clients
        to start another daemon: the one they start can bind at once."""
        try:
            os.unlink(self.path)
        except OSError:
            pass
        late = _pending(self.listener)  # connected before the unlink, never accepted
        self.listener.close()
        _drop_warm_discovery()
        self.watch.close()
        os.close(self.lock)
        self.log.write(f"exiting: {self.stopping}")
        for conn, _message, fds in self.queue:
            protocol._close(fds)
            _reply(conn, {"restart": self.stopping})
            conn.close()
        for conn in late:
            _reply(conn, {"restart": self.stopping})
            conn.close()
        if self.running:
            _signal(self.running.pid, signal.SIGTERM)


_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _pending(listener: socket.socket) -> list[socket.socket]:
    """The connections waiting to be accepted, their requests read (and their
    descriptors closed), so a reply reaches them before the close does."""
    listener.setblocking(False)
    conns = []
    while True:
        try:
            conn = listener.accept()[0]
        except OSError:
            return conns
        conn.settimeout(1)
        try:
            protocol._close(protocol.receive(conn, with_fds=True)[1])
        except (OSError, EOFError, ValueError):
            pass
        conns.append(conn)


def _reply(conn: socket.socket, message: dict) -> bool:
    try:
        protocol.send(conn, message)
        return True
    except OSError:
        return False


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _warm_child(path: str) -> int | None:
    """The pid of the warm discovery child the commands share (see discovery.warm), if one runs."""
    import json

    try:
        with open(path[: -len(".sock")] + ".warm.json") as f:
            pid = int(json.load(f)["pid"])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _rss_kb() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _version() -> str:
    from ..__about__ import __version__

    return __version__
