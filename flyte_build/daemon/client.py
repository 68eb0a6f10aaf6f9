"""The thin client: every `flyte-build` command starts here.

When the command may use the daemon (see `address.wanted`), send it argv,
the working directory, the environment, the umask and the terminal's three
descriptors, then wait for its exit status; Ctrl-C and SIGTERM are passed on
to the command. No daemon yet (or a stale socket): start one and wait for it.
Anything else (it cannot start, it ended mid-command, it refused us): say so
once and let the caller run the command in this process. Imports `_socket`
and `_signal` (not their Python wrappers, which import `enum` and
`selectors`) besides what Python has loaded at start; `subprocess` only to
start a daemon.
"""

from __future__ import annotations

import os
import sys

import _socket

from . import address, protocol

START_TIMEOUT = 30.0  # a loaded machine imports flyte-build's modules slowly
ASK_TIMEOUT = 2.0  # a no-op's question to a daemon that does not answer: then stat
WAIT_NOTICE = 1.0  # seconds in the queue behind another command before saying so
# what the daemon process itself keeps of the first client's environment
# (each command gets its own client's environment, see runner)
_DAEMON_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH", "PYTHONHOME",
               "PYTHONNOUSERSITE", "PYTHONUSERBASE", "PYTHONSAFEPATH", "PYTHONDONTWRITEBYTECODE",
               "FLYTE_BUILD_WATCH_MAX_DIRS")


def say(text: str) -> None:
    try:
        sys.stderr.write(f"flyte-build: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _where(argv: list[str]) -> tuple[str, str, str, dict] | None:
    """(socket path, working directory, project, config) when this command
    goes to the daemon."""
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    project = address.project_dir(argv, cwd)
    conf = address.settings(project)
    if not address.wanted(argv, os.environ, conf):
        return None
    return address.socket_path(address.cache_dir(argv), project), cwd, project, conf


def replay(argv: list[str], loaded) -> int | None:
    """A no-op `build --json` answered from its snapshot (`loaded`, see
    stores.snapshot): without a tree stat when the daemon's watch says nothing
    changed since the snapshot was last found to hold (see
    daemon.noop_answers), else by statting as without a daemon. None when the
    snapshot no longer holds."""
    from ..stores import snapshot

    where = _where(argv)
    question = {"op": "unchanged", "snapshot": loaded.path, "sig": loaded.sig}
    answer = _ask(where[0], question) if where else None
    if answer and answer.get("unchanged") is True:
        return snapshot.emit(loaded)
    lines = loaded.lines()
    if lines is None or not snapshot.stats_hold(*lines):
        return None
    generation = answer.get("generation") if answer else None
    if isinstance(generation, int):  # read before our stats: the next no-op needs none
        _ask(where[0], {**question, "op": "verified", "generation": generation, "epoch": answer.get("epoch")})
    return snapshot.emit(loaded)


def _ask(path: str, message: dict) -> dict | None:
    """One request and its answer; None when no daemon answers in time."""
    sock = connect(path)
    if sock is None:
        return None
    try:
        sock.settimeout(ASK_TIMEOUT)
        protocol.send(sock, message)
        return protocol.receive(sock)[0]
    except (OSError, EOFError, ValueError):
        return None
    finally:
        sock.close()


def run(argv: list[str]) -> int | None:
    """The command's exit status from the daemon, or None to run it here."""
    where = _where(argv)
    if where is None:
        return None
    path, cwd, project, conf = where
    request = _request(argv, cwd, project, address.idle_timeout(argv, conf))
    for _attempt in range(3):
        sock = connect(path) or _start(path, project, request["idle_timeout"])
        if sock is None:
            say("could not start the resident process; running the command in this process")
            return None
        outcome = _exchange(sock, request)
        if isinstance(outcome, int):
            return _died_of(-outcome) if outcome < 0 else outcome
        if outcome != "restart":
            say(f"{outcome}; running the command in this process")
            return None
    return None


def _died_of(signum: int) -> int:
    """End as the command ended, by its signal: a parent then sees what it
    sees without the resident process (killed by SIGTERM, not exit 143)."""
    import _signal

    _signal.signal(signum, _signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum  # blocked: the shell's number for it


def _request(argv: list[str], cwd: str, project: str, idle: float) -> dict:
    mask = os.umask(0o022)
    os.umask(mask)
    streams = [s for s in (sys.stdout, sys.stderr)]
    return {
        "op": "run", "argv": argv, "cwd": cwd, "env": dict(os.environ), "umask": mask, "path": list(sys.path),
        "project": project, "identity": address.identity(project), "idle_timeout": idle,
        "stdio": [[getattr(s, "encoding", None) or "utf-8", getattr(s, "errors", None) or "strict"] for s in streams],
    }


def connect(path: str):
    """A connected socket, or None when no daemon listens at `path`."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    fd = None
    try:
        where, fd = address.reachable(path)
        sock.connect(where)
        if listener_uid(sock) != os.getuid():  # never our environment or terminal to another user's process
            raise PermissionError(f"{path} is served by another user")
    except OSError:  # none there, a stale socket whose daemon is gone, or not ours
        sock.close()
        return None
    finally:
        if fd is not None:
            os.close(fd)
    return sock


def listener_uid(sock) -> int:
    """The uid of the process listening on a connected Unix socket
    (SO_PEERCRED: pid, uid, gid as C ints)."""
    cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(cred[4:8], sys.byteorder)


def _start(path: str, project: str, idle: float):
    """Start a daemon and connect to it. Two clients racing here each start
    one; the daemon's lock lets exactly one of them serve (see server)."""
    import subprocess
    import time

    env = {k: v for k, v in os.environ.items() if k in _DAEMON_ENV}
    try:
        proc = subprocess.Popen([*own_python("flyte_build.daemon.server"), path, project, repr(idle)], cwd="/",
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    except OSError:
        return None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        sock = connect(path)
        if sock is not None:
            return sock
        # 0: it lost the race to another daemon, which is still starting; else it failed (see its log)
        if proc.poll() not in (None, 0):
            return None
        time.sleep(0.01)
    return None


def own_python(module: str) -> list[str]:
    """A command line running `module`'s main() with this flyte-build: not
    `-m`, which would import a `flyte_build` in the working directory first."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = f"import sys; sys.path.insert(0, {package_parent!r}); from {module} import main; sys.exit(main())"
    return [sys.executable, "-c", code]


def _stdio() -> list[int]:
    """Our stdin, stdout and stderr; /dev/null in place of a closed one."""
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


def _exchange(sock, request: dict) -> int | str:
    """Send the command; its exit status, "restart" (that daemon was stale and
    has gone: start another), or why it could not run there."""
    import _signal

    def forward(signum, _frame):
        try:
            protocol.send(sock, {"op": "signal", "signal": int(signum)})
        except OSError:
            pass

    saved = {s: _signal.signal(s, forward) for s in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)}
    try:
        protocol.send(sock, request, _stdio())
        return _wait(sock)
    except (OSError, EOFError, ValueError):
        return "the resident process ended during the command"
    finally:
        for s, handler in saved.items():
            _signal.signal(s, handler)
        sock.close()


def _wait(sock) -> int | str:
    sock.settimeout(WAIT_NOTICE)
    started = False
    while True:
        try:
            message, _ = protocol.receive(sock)
        except TimeoutError:
            if not started:
                say("waiting for another command in the resident process to finish")
            sock.settimeout(None)
            continue
        if "started" in message:
            started = True
            sock.settimeout(None)
        elif "exit" in message:
            return -int(message["signal"]) if message.get("signal") else int(message["exit"])
        elif "restart" in message:
            return "restart"
        elif "refused" in message:
            return f"the resident process refused the command: {message['refused']}"
