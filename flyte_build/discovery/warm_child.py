"""Discovery's warm child: a long-lived discovery child (`child`) that serves edits.

Started like the cold child (by path, in the project's interpreter) with
REQUEST.json RESULT.json SOCKET. It first does what the cold child does
(flyte initialised, every candidate imported, the result written), and then
writes RESULT.json.warm: whether it can serve edits, and what the parent needs
to tell, later, which modules an edit reaches (`warm.plan`). Then it stays,
with flyte and every module imported, and serves one client at a time on the
Unix socket SOCKET (one JSON line each way), until the process that owns it
(the request's `owner`: a resident process, or the command) is gone.

A request names the modules to run again. The child forks; the fork takes
those modules out of `sys.modules` (and their environments out of flyte's
registry, their records out of the recorders), imports the candidates again
(the others are imported already, so only the named ones run) and writes the
full result as the cold child would. The warm child itself never changes:
the next edit forks it again.
"""

from __future__ import annotations

import gc
import importlib
import json
import linecache
import os
import socket
import sys
from pathlib import Path

from flyte_build import atomic
from flyte_build.discovery import child as dc
from flyte_build.discovery import distributions
from flyte_build.discovery.recorder import KINDS, ReadRecorder, _record_environ, ignored_prefixes
from flyte_build.processes import children


def _body_of(frame, prefixes: tuple[str, ...]) -> str | None:
    """The `__file__` of the innermost user module whose body is running."""
    while frame is not None:
        if frame.f_code.co_name == "<module>":
            f = frame.f_globals.get("__file__")
            if isinstance(f, str) and f.startswith(prefixes):
                return f
        frame = frame.f_back
    return None


class _Base:
    """What the warm child keeps from its imports for its forks."""

    def __init__(self, root: str):
        self.root = root
        self.prefixes = (root.rstrip("/") + "/",)
        self.creators: dict[int, str | None] = {}  # id(env) -> the module body that made it
        self.run: dc.Imported | None = None
        self.flyte_cfg: dict = {}
        self.search_roots: list[str] = []
        self._rels: dict[str, str | None] = {}
        self.modules: dict[str, list[tuple[str, object]]] | None = None  # _user_modules, once

    def note_env(self, env) -> None:
        self.creators[id(env)] = _body_of(sys._getframe(2), self.prefixes)

    def rel(self, path: str | None) -> str | None:
        """The user file (relative) at `path`, None when it is not one (remembered: one realpath each)."""
        if not path:
            return None
        got = self._rels.get(path, False)
        if got is False:
            real = os.path.realpath(path)
            bad = not real.startswith(self.prefixes) or "/site-packages/" in real or "/.venv/" in real
            got = self._rels[path] = None if bad else real[len(self.root) + 1:]
        return got


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def _startup_environ() -> ReadRecorder:
    """Notes the variables flyte and we read while starting (before the user's
    modules run): a change to one of them means a new warm child."""
    rec = ReadRecorder(())
    _record_environ(rec)
    rec.active = True
    return rec


def _refs(run: dc.Imported, base: _Base) -> dict[str, list[str]]:
    """{user file: every module name its body asked for, with their packages and
    `from` items}: which modules a file added later might change."""
    out: dict[str, set[str]] = {}
    one = {}.setdefault  # a name once, however many files ask for it: 16k files' sets share them
    for owner, name, level, package, fromlist in run.tracker.events:
        rel = base.rel(owner)
        if rel is None:
            continue
        try:
            absname = importlib.util.resolve_name("." * level + name, package) if level else name
        except (ImportError, ValueError, TypeError):
            continue
        parts = absname.split(".")
        names = out.setdefault(rel, set())
        names.update(one(n, n) for n in (".".join(parts[:i]) for i in range(1, len(parts) + 1)))
        names.update(one(n, n) for n in (f"{absname}.{x}" for x in (fromlist or ()) if isinstance(x, str) and x != "*"))
    return {f: sorted(v) for f, v in sorted(out.items())}


def _reads_by(run: dc.Imported, base: _Base) -> list[list]:
    """[[kind, value, module body, file charged]] (relative) for each read, once each.
    A read by an installed library (or no code) may be cached by it: running the
    module again would not read it again, so its body is given as None (only a
    new warm child sees a change)."""
    seen = set()
    for kind, value, charged, body in run.reads.log or ():
        seen.add((kind, value, base.rel(body) if body and charged else None, base.rel(charged)))
    return sorted([list(x) for x in seen], key=lambda x: (x[0], x[1], x[2] or "", x[3] or ""))


def _process_state() -> tuple:
    """What the user's modules may change for the modules after them and a fork
    cannot put back per module: sys.path and the environment (a fork sets the
    request's environment)."""
    return tuple(sys.path), dict(os.environ)


def _why_not_warm(result: dict, base: _Base, threads_before: int, state_before: tuple) -> str | None:
    """Why forks of this child could not stand for a cold discovery (None: they can)."""
    if result.get("problems") or result.get("failures") or result.get("duplicates"):
        return "the warm child's own discovery had load failures or duplicate environments"
    if not result.get("incremental_ok"):
        return "the result depends on the order modules were loaded in (or a module loaded outside any import)"
    if _threads() > threads_before:
        return "a module started a thread at import"
    if children.descendants(os.getpid()):
        return "a module started a process at import"
    if any(c is None for c in base.creators.values()):
        return "an environment was made outside any module body of the repository"
    path, environ = state_before
    if tuple(sys.path) != path:
        return "a module changed sys.path at import"
    if dict(os.environ) != environ:
        return "a module changed os.environ at import"
    return None


def start(request_path: str, result_path: str) -> _Base | None:
    """The cold child's work, and what the forks need; None when they cannot be trusted."""
    req = json.loads(Path(request_path).read_text())
    startup = _startup_environ()
    try:
        root, search_roots, flyte_cfg = dc.prepare(req)
    except dc.BadFlyteConfig as exc:
        atomic.write_bytes(result_path, json.dumps({"envs": [], "problems": [str(exc)]}).encode())
        _write_warm(result_path, {"ready": False, "why": "flyte's config file cannot be read"})
        return None
    startup.active = False
    from flyte_build import flyte_adapter as fa

    base = _Base(root)
    base.flyte_cfg, base.search_roots = flyte_cfg, search_roots
    fa.note_environment_creation(base.note_env)
    threads_before, state_before = _threads(), _process_state()
    reads = ReadRecorder(ignored_prefixes((os.path.dirname(os.path.abspath(request_path)),)), root)
    reads.log = []
    reads.install()
    run = base.run = dc.import_recorded(req, "", root, search_roots, fa, reads=reads)
    run.tracker.memo = {}  # the forks look up the kept modules' import events (see _ImportTracker.edges)
    result = dc.result_of(req, root, run, flyte_cfg, fa)
    atomic.write_bytes(result_path, json.dumps(result, sort_keys=True).encode())
    why = _why_not_warm(result, base, threads_before, state_before)
    del result  # megabytes at 20k files, the forks never read it: its pages serve the warm record
    for mod in list(sys.modules.values()):  # each fork asks again: ask once here
        base.rel(getattr(mod, "__file__", None))
    base.modules = _user_modules(base)
    _write_warm(result_path, {
        "ready": why is None, "why": why, "refs": _refs(run, base), "reads": _reads_by(run, base),
        "startup_environ": sorted(startup.environ), "modules": sorted(sys.modules),
        "sys_path": [p for p in sys.path if p and os.path.realpath(p).startswith(base.prefixes[0])] + [root],
    })
    if why is None:
        distributions._installed()  # each fork may ask (an edit importing a package): read it once here
        # each fork's collections would walk every object the imports made (flyte's and the
        # repository's), copying the pages they touch: they are the warm child's for good
        gc.freeze()
    return None if why else base


def _write_warm(result_path: str, record: dict) -> None:
    atomic.write_bytes(result_path + ".warm", json.dumps(record, sort_keys=True).encode())


# -- a fork serving one request ---------------------------------------------------


def _user_modules(base: _Base) -> dict[str, list[tuple[str, object]]]:
    """{user file (relative): [(module name, module)]} of what sys.modules holds now."""
    out: dict[str, list[tuple[str, object]]] = {}
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if f and not f.startswith(children.OWN_DIR + "/"):
            rel = base.rel(f)
            if rel is not None:
                out.setdefault(rel, []).append((name, mod))
    return out


def _forget(base: _Base, files: set[str], fa) -> None:
    """Take the modules of `files` out of sys.modules (and off their packages),
    and the environments they made or declare out of flyte's registry."""
    # the warm child's own modules, listed once when it started (it runs no user code
    # after that): a fork walks the edited files' entries, not all of sys.modules
    mods = base.modules if base.modules is not None else _user_modules(base)
    for name, mod in [m for f in sorted(files) for m in mods.get(f, ())]:
        if sys.modules.get(name) is not mod:
            continue
        del sys.modules[name]
        parent, _, child = name.rpartition(".")
        if parent and getattr(sys.modules.get(parent), child, None) is mod:
            delattr(sys.modules[parent], child)  # else `from pkg import gone` still finds it
    made_by = {i: base.rel(f) for i, f in base.creators.items()}
    fa.forget_environments(lambda e: made_by.get(id(e)) in files or base.rel(fa.declaring_file(e)) in files)


def _kept_records(base: _Base, files: set[str]) -> tuple[dc.Imported, set]:
    """(the recorders as the kept modules left them, the reads to see again): the
    records of `files` dropped. A read made by a module run again through a kept
    module's function is dropped too, but that function may have cached what it
    read: unless the fork reads it again, the fork cannot vouch for its result."""
    run = base.run
    keep = (lambda f: base.rel(f) not in files)
    tracker = run.tracker
    tracker.events[:] = [e for e in tracker.events if e[0] is None or keep(e[0])]
    tracker.forget_owners({o for o in tracker.memo or () if o is not None and not keep(o)})
    prints = run.prints
    prints.handed = None
    prints.prints = {p: v for p, v in prints.prints.items() if keep(p)}
    reads = run.reads
    log, again = [], set()
    for x in reads.log:
        kind, value, charged, body = x
        if charged is None or body is None or (keep(body) and keep(charged)):
            log.append(x)
        elif keep(charged):
            again.add((kind, value))
    for k in (*KINDS, "stats"):
        getattr(reads, k).clear()
    reads.owned.clear()
    reads.unowned = {k: set() for k in KINDS}
    reads.log = log
    for kind, value, charged, _body in log:
        getattr(reads, kind).add(value)
        if kind not in KINDS:
            continue
        if charged is not None:
            reads.owned.setdefault(charged, {k: set() for k in KINDS})[kind].add(value)
        else:
            reads.unowned[kind].add(value)
    return run, again


def serve_one(base: _Base, msg: dict) -> int:
    """In the fork: the result of the request's candidates after running `msg["files"]` again."""
    children.become_subreaper()
    children.die_with_parent()
    from flyte_build import flyte_adapter as fa

    req = msg["request"]
    files = set(msg["files"])
    os.environ.clear()  # the recorder is off: setting them is no read
    os.environ.update(msg["environ"])
    linecache.clearcache()
    importlib.invalidate_caches()  # a file added since the warm child listed its directory
    _forget(base, files, fa)
    kept, again = _kept_records(base, files)
    run = dc.import_recorded(req, "", base.root, base.search_roots, fa, reads=kept.reads, tracker=kept.tracker,
                             prints=kept.prints, forked=True)
    result = dc.result_of(req, base.root, run, base.flyte_cfg, fa)
    if any(value not in getattr(run.reads, kind) for kind, value in again):
        result["incremental_ok"] = False  # the parent then asks the cold child
    atomic.write_bytes(msg["result"], json.dumps(result, sort_keys=True).encode())
    return 0


def _fork(base: _Base, msg: dict) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = serve_one(base, msg)
        finally:
            try:
                children.end_descendants()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def serve(base: _Base, listener: socket.socket) -> None:
    """Serve one client at a time (the command that holds the repository), each
    for as many requests as it sends, until one says close."""
    while True:
        conn, _ = listener.accept()
        with conn, conn.makefile("rwb") as f:
            for line in f:
                msg = json.loads(line)
                if msg.get("op") == "close":
                    return
                code = _fork(base, msg)
                f.write(json.dumps({"exit": code}).encode() + b"\n")
                f.flush()


def main(request_path: str, result_path: str, sock_path: str) -> int:
    # the directory the parent made for this child: it outlives the command that made it, so
    # when its resident process dies without closing it, this child removes it
    children.remove_when_orphaned(os.path.dirname(os.path.abspath(sock_path)))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)  # in the parent's private directory
    listener.listen(4)
    base = start(request_path, result_path)
    sys.stdout.flush()
    if base is not None:
        serve(base, listener)
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1], sys.argv[2], sys.argv[3])
    finally:
        children.end_descendants()
    sys.exit(code)
