"""The daemon's log beside its socket: when it started and stopped and each
command's exit status and time. Never a command's arguments or environment
(they may carry secrets)."""

from __future__ import annotations

import os
import time

MAX_BYTES = 1 << 20


class Log:
    def __init__(self, path: str):
        self.path = path
        try:
            if os.path.getsize(path) > MAX_BYTES:
                os.unlink(path)
        except OSError:
            pass

    def write(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(f"{stamp} [{os.getpid()}] {line}\n")
        except OSError:
            pass
