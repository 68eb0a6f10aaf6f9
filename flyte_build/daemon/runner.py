"""Running one command in a fork of the warm daemon.

The fork starts with every module the daemon imported and becomes the
client for the length of the command: the client's terminal descriptors on
0, 1 and 2, its environment (in place, so `os.environ` defaults bound at
import see it), its working directory, umask and argv, and Python's own
signal handling. The daemon itself never takes on a request's environment:
whatever the command reads or caches dies with the fork.
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def start(request: dict, fds: list[int], close: list[int]) -> int:
    """Fork, run `request` in the child, return the child's pid. The
    parent gives up its copies of the client's descriptors."""
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    code = 1
    try:
        _become(request, fds, close)
        code = _main(request["argv"])
    except BaseException as exc:  # a failure outside the CLI's own handling: say it, never hang the client
        try:
            sys.stderr.write(f"flyte-build: internal error in the resident process: {type(exc).__name__}: {exc}\n")
        except Exception:
            pass
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(code)


def _become(request: dict, fds: list[int], close: list[int]) -> None:
    _die_with_daemon()
    for fd in close:
        os.close(fd)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(s, signal.SIG_DFL)
    os.umask(int(request["umask"]))
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    # the client's import path, not the daemon's ('' from its `-c`, which is the
    # working directory once the fork is in it: a yaml.py there would shadow yaml)
    sys.path[:] = request.get("path") or sys.path
    _streams(request.get("stdio") or [["utf-8", "strict"]] * 2, bool(os.environ.get("PYTHONUNBUFFERED")))
    sys.argv = ["flyte-build", *request["argv"]]


def _die_with_daemon() -> None:
    """SIGTERM when the daemon dies (the command's own handler then ends its
    children): a killed daemon leaves no command running behind the client."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # it died before the call
        os._exit(1)


def _streams(stdio: list, unbuffered: bool) -> None:
    """Text streams over the client's descriptors, as Python would have made
    them in the client (its encodings, line buffering on a terminal)."""
    (out_enc, out_err), (err_enc, err_err) = stdio[0], stdio[1]
    sys.stdin = sys.__stdin__ = open(0, "r", encoding=out_enc, closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding=out_enc, errors=out_err, closefd=False,
                                       buffering=1 if os.isatty(1) else -1)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding=err_enc, errors=err_err, closefd=False, buffering=1)
    if unbuffered:
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)


def _main(argv: list[str]) -> int:
    from ..cli import main

    try:
        return main(argv)
    except SystemExit as exc:  # argparse's usage errors, --help, --version
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        sys.stderr.write(f"{exc.code}\n")
        return 1
