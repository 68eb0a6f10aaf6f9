"""A second process for the checks of shared bundles (`check.why_not`).

A fresh CI machine with a warm shared cache spends its build checking 50
downloaded bundles and computing their keys, in threads of one process: the
inflate and the hashing let go of the interpreter lock, but the rest of a
check (planning the expected stream, walking it) holds it, so one core waits
while the other works. A copy of the process made by fork before the build
starts any thread takes every check: an engine thread waits for it (the
wait lets go of the lock, so the other thread computes the next keys), which
measured better than checking in-process when it is busy (median wall 1.57 s
against 1.85 s, 6 interleaved pairs at 50 envs, load 1.5). The answer is the
same function's on the same bytes; only where it runs differs.

It is started only in a process with no other thread (a fork copies no lock
another thread holds), on a machine with two cores or more; if it dies or
answers nonsense, the checks go back in-process (`Helper.ask` says so). It
reads its requests from a pipe and ends when the pipe closes, so a parent
killed at any moment leaves no process behind.
"""

from __future__ import annotations

import os
import pickle
import threading

_LEN = 8  # bytes of each message's length


class Helper:
    """The parent's end: one request at a time."""

    def __init__(self, pid: int, requests: int, answers: int):
        self.pid, self._requests, self._answers = pid, requests, answers
        self._busy = threading.Lock()
        self.alive = True
        self.answered = 0

    def ask(self, path, members) -> tuple[bool, str | None]:
        """(True, the check's answer) when the helper gave it (after any check
        before it); (False, None) when it is gone (the caller checks in-process)."""
        if not self.alive:
            return False, None
        self._busy.acquire()
        try:
            if not self.alive:  # stopped, or found dead, while this thread waited
                return False, None
            _send(self._requests, (os.fspath(path), members))
            answer = _receive(self._answers)
            if answer is not None and not isinstance(answer, str):
                raise ValueError("not an answer")
            self.answered += 1
            return True, answer
        except (OSError, EOFError, ValueError, pickle.PickleError):
            self.alive = False
            return False, None
        finally:
            self._busy.release()

    def stop(self) -> None:
        self.alive = False
        # no thread is mid-request once the lock is had (a check is bounded), so the
        # pipes are never closed under one (their numbers could be reused)
        held = self._busy.acquire(timeout=60)
        for fd in (self._requests, self._answers):
            try:
                os.close(fd)
            except OSError:
                pass
        if held:
            self._busy.release()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def start(check) -> Helper | None:
    """A helper answering with `check(path, members)`, or None where one would
    not be safe or would not help."""
    if not hasattr(os, "fork") or threading.active_count() != 1 or _cores() < 2:
        return None
    req_r, req_w = os.pipe()
    ans_r, ans_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper: nothing of the parent's run but this loop
        try:
            os.close(req_w)
            os.close(ans_r)
            _serve(check, req_r, ans_w)
        finally:
            os._exit(0)  # no atexit handler, no buffered output of the parent's
    os.close(req_r)
    os.close(ans_w)
    return Helper(pid, req_w, ans_r)


def _cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def _serve(check, requests: int, answers: int) -> None:
    while True:
        try:
            path, members = _receive(requests)
        except (EOFError, OSError):
            return  # the parent closed its end (or is gone)
        _send(answers, check(path, members))


def _send(fd: int, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(_LEN, "little") + data)
    while view:
        view = view[os.write(fd, view):]


def _receive(fd: int):
    n = int.from_bytes(_read(fd, _LEN), "little")
    return pickle.loads(_read(fd, n))


def _read(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        got = os.read(fd, min(left, 1 << 20))
        if not got:
            raise EOFError("the other end closed")
        chunks.append(got)
        left -= len(got)
    return b"".join(chunks)
