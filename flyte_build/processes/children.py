"""Child processes that run the user's code (discovery, task serialization).

The user's modules run only in such a child, and a module may be hostile (a
pull request adds it) or merely badly behaved (it sleeps, forks, calls
`setsid`). So every such child:

- runs in its own session, hence its own process group: a timeout or a signal
  to flyte-build ends that group and never the caller's (a CI step's shell);
- becomes a child subreaper (Linux), so whatever its modules start stays below
  it even after a double fork or `setsid`, and is ended with it (`end_tree`);
- gets an environment without our secrets (`user_environ`): the cache signing
  key, the path of its file and the storage credentials flyte-build reads;
- finds flyte_build's own modules through a directory that holds only the
  `flyte_build` package (`stage_package`), so the project's interpreter does not
  see the packages of the environment flyte-build is installed in. That
  directory takes the place of the working directory (the user's root) first on
  sys.path (`command`): a `flyte_build` of the user's never stands in for ours;
- while the user's modules import (`users_view`), our package is out of
  sys.modules and off sys.path: `import flyte_build` in their code gets what
  `flyte deploy` would give them (the root's, or an installed one), not ours.

Standard library only: the children import this module in the project's
interpreter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time

from ..reach import reachable

# the variables flyte-build reads its secrets from; user code never sees them
SECRET_VARS = frozenset({
    "FLYTE_BUILD_CACHE_SIGNING_KEY",
    "FLYTE_BUILD_CACHE_SIGNING_KEY_FILE",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
})
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_DUMPABLE = 4


def user_environ(environ=None) -> dict[str, str]:
    """The environment a child running user code gets: ours without the secrets."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k not in SECRET_VARS}


def stage_package(where: str) -> str:
    """A directory under `where` holding only the `flyte_build` package (a
    symlink to this one), to put on a child's PYTHONPATH."""
    lib = os.path.join(where, "lib")
    os.makedirs(lib, exist_ok=True)
    os.symlink(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), os.path.join(lib, "flyte_build"))
    return lib


# `-c` puts the working directory (the user's root) first on sys.path, where a
# `flyte_build` of the user's would be found before ours: the staged directory
# takes its place, as the `flyte` command's bin directory is first for `flyte
# deploy` (nothing is put first under -P / PYTHONSAFEPATH); then the child runs by path
_BOOT = ("import sys; sys.path[0:0 if getattr(sys.flags, 'safe_path', False) else 1] = [sys.argv.pop(1)]; "
         "import runpy; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # flyte_build/; in a child: the staged package's directory


def command(python: str, lib: str, script: str, *args: str) -> list[str]:
    """The command running `script` (a file of ours) in `python` with `lib`
    (from `stage_package`) first on sys.path and the user's root not at all."""
    return [python, "-c", _BOOT, lib, script, *args]


def own_script(lib: str, name: str) -> str:
    """A module of our package as a file under `lib` (its frames are then ours by path)."""
    return os.path.join(lib, "flyte_build", name)


def child_environ() -> dict[str, str]:
    env = user_environ()
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # user modules must not write __pycache__ into the repo
    return env


def installed_under(root: str) -> tuple[str, ...]:
    """The running interpreter's own trees (its venv, its base install) that lie
    under `root`, each ending in "/". uv and poetry keep the project's `.venv` in
    the project: what is in it is installed, not the project's, and must count
    as it would in an interpreter outside the root (the working tree and an
    exported revision then see the same sys.path entries, owners and specs)."""
    import sys

    root_s = os.path.realpath(root).rstrip("/") + "/"
    dirs = {os.path.realpath(p).rstrip("/") + "/" for p in (sys.prefix, sys.exec_prefix, sys.base_prefix) if p}
    return tuple(sorted(d for d in dirs if d.startswith(root_s)))


def is_ours(module_name: str) -> bool:
    return module_name == "flyte_build" or module_name.startswith("flyte_build.")


@contextlib.contextmanager
def users_view():
    """In a child, around the imports of the user's modules: our package out of
    sys.modules and its directory off sys.path, so their `import flyte_build`
    finds theirs (or an installed one, as `flyte deploy` would). Ours comes back
    unless their code loaded a `flyte_build` of its own: that one stays, as in
    `flyte deploy`'s process (flyte's serializer and the scan of the loaded
    modules see their modules). The children's code imports nothing of ours
    lazily after this."""
    import sys

    lib = os.path.dirname(OWN_DIR)
    ours = {n: m for n, m in sys.modules.items() if is_ours(n)}
    at = [i for i, p in enumerate(sys.path) if os.path.abspath(p or ".") == lib]
    for n in ours:
        del sys.modules[n]
    for i in reversed(at):
        del sys.path[i]
    try:
        yield
    finally:
        if not any(is_ours(n) for n in sys.modules):
            sys.modules.update(ours)
            for i in at:
                sys.path.insert(i, lib)


def hide_environ() -> None:
    """When a secret is in our environment: make this process non-dumpable, so
    a child of the same user cannot read it from `/proc/<our pid>/environ` (nor
    our memory) after all (Linux; a child's own `execve` makes it dumpable again)."""
    if SECRET_VARS.isdisjoint(os.environ):
        return
    _prctl(_PR_SET_DUMPABLE, 0)


def _prctl(option: int, value: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


# -- the process tree ------------------------------------------------------------


def become_subreaper() -> None:
    """Orphans of this process's descendants are re-parented to it, not to init
    (Linux; elsewhere nothing happens and the process group is what is ended)."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _parents() -> dict[int, int]:
    """{pid: parent pid} of every process (empty without /proc)."""
    out = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            out[int(name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return out


def descendants(pid: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for p, pp in _parents().items():
        kids.setdefault(pp, []).append(p)
    return reachable([pid], kids) - {pid}


def end_tree(pid: int, include_root: bool = True) -> None:
    """SIGKILL `pid` (unless not `include_root`) and every descendant. They are
    stopped first, round after round until no new one appears, so none can fork
    a process past the walk; then all are killed at once."""
    stopped: set[int] = set()
    for _ in range(100):
        new = (descendants(pid) | ({pid} if include_root else set())) - stopped
        if not new:
            break
        for p in new:
            _signal(p, signal.SIGSTOP)
        stopped |= new
    for p in stopped:
        _signal(p, signal.SIGKILL)


def end_descendants() -> None:
    """In a child: end everything the user's modules started (called last)."""
    end_tree(os.getpid(), include_root=False)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# directories this child removes when it ends because its owner is gone (it ends by
# SIGKILL to its own group then: nothing after that would run)
_remove_when_orphaned: list[str] = []


def remove_when_orphaned(path: str) -> None:
    _remove_when_orphaned.append(path)


def die_with_parent(poll: float = 0.2, owner: int | None = None) -> None:
    """End this child, with what its modules started, as soon as the parent is
    gone (killed before it could do that itself). Only this child's own group
    and descendants: never the group it was started in. `owner`: watch that
    process instead of the parent (a warm discovery child outlives the command
    that started it, not the resident process that owns it)."""
    parent = os.getppid()

    def gone() -> bool:
        if owner is None:
            return os.getppid() != parent
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False

    def watch() -> None:
        while True:
            time.sleep(poll)
            if gone():
                try:
                    for path in _remove_when_orphaned:
                        shutil.rmtree(path, ignore_errors=True)
                    end_descendants()
                    if os.getpgrp() == os.getpid():
                        os.killpg(os.getpid(), signal.SIGKILL)
                finally:
                    os._exit(1)

    threading.Thread(target=watch, name="flyte-build-watchdog", daemon=True).start()


# -- in the parent ---------------------------------------------------------------

_live: set[subprocess.Popen] = set()
_live_lock = threading.RLock()  # re-entrant: a signal handler may run while this thread holds it


def start(cmd: list[str], cwd: str, env: dict, stdout, stderr) -> subprocess.Popen:
    """Start a child in its own session; `finish` it whatever happens."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            start_new_session=True)
    with _live_lock:
        _live.add(proc)
    return proc


def finish(proc: subprocess.Popen) -> None:
    """End the child's tree and group (what its modules left running) and reap it.
    The group is killed only while the child is not reaped yet: until then its
    pid, which is the group's id, cannot be another process's."""
    if proc.returncode is None:
        if not _exited(proc.pid):
            end_tree(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()
    with _live_lock:
        _live.discard(proc)


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def wait(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the child to exit, leaving it unreaped
    (for `finish`); False when it is still running."""
    deadline, delay = time.monotonic() + timeout, 0.0005
    while not _exited(proc.pid):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left, 0.05))
        delay *= 2
    return True


def end_all() -> None:
    """Every child still running (flyte-build is being ended by a signal)."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        end_tree(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def on_signals():
    """Make SIGTERM and SIGINT end our children before flyte-build ends (as
    each would have ended it); returns what puts the old handlers back. Only
    from the main thread, and only over the default handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    saved = {}

    def terminated(signum, frame):
        end_all()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def interrupted(signum, frame):
        end_all()
        raise KeyboardInterrupt

    for sig, handler, default in ((signal.SIGTERM, terminated, signal.SIG_DFL),
                                  (signal.SIGINT, interrupted, signal.default_int_handler)):
        if signal.getsignal(sig) is default:
            saved[sig] = signal.signal(sig, handler)
    return lambda: [signal.signal(s, h) for s, h in saved.items()]


def run(cmd: list[str], cwd: str, env: dict, timeout: float, what: str, tmp: str, progress: str, result: str,
        while_waiting=None) -> None:
    """Run a child that writes `result`, its output to a file in `tmp` (not a pipe: a
    chatty module must not block on a full one while `while_waiting(running)`
    runs; `running()` tells whether the child still runs). A
    child past `timeout` seconds, or one that wrote no result, is a UserError
    naming the module it was importing (from its `progress` file)."""
    from ..errors import UserError

    log_path = os.path.join(tmp, "output.log")
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = start(cmd, cwd, env, log, subprocess.STDOUT)
        try:
            if while_waiting is not None:
                while_waiting(lambda: proc.poll() is None)
            if not wait(proc, max(0.0, timeout - (time.monotonic() - started))):
                raise UserError(_timed_out(what, timeout, progress))
        finally:
            finish(proc)  # with anything the user's modules left running
    if not os.path.exists(result):
        with open(log_path, "rb") as f:
            output = f.read().decode(errors="replace")
        raise UserError(_no_result(what, proc.returncode, output, progress))


def _timed_out(what: str, timeout: float, progress: str) -> str:
    from ..discovery.reads import read_progress

    where = read_progress(progress)
    at = f"while importing module {where[0]} ({where[1]})" if where else "while starting (importing flyte)"
    return (f"{what} timed out after {timeout:g} s {at}; a module that blocks at import "
            "(a sleep, a network call, a FIFO) stops it: fix it, or raise discovery-timeout / --discovery-timeout")


def _no_result(what: str, returncode: int, output: str, progress: str) -> str:
    from ..discovery.reads import read_progress

    tail = "\n".join(output.strip().splitlines()[-15:])
    where = read_progress(progress)
    at = f"module {where[0]} ({where[1]})" if where else "the user's modules"
    # os._exit() or a crash in C code: no exception to report, only where it happened
    return (f"{what} failed (exit {returncode}, no result) while importing {at}"
            + (f":\n{tail}" if tail else "; the process ended without a word (os._exit or a crash?)"))
