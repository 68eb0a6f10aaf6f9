"""`daemon status` and `daemon stop` from the client's side: find the
repository's daemon by the same rules a command uses and ask it."""

from __future__ import annotations

import os
import time

from . import address, client, protocol


def socket_for(argv: list[str]) -> str:
    return address.socket_path(address.cache_dir(argv), address.project_dir(argv, os.getcwd()))


def ask(path: str, op: str) -> dict | None:
    """The daemon's answer to `op`, or None when no daemon listens there."""
    sock = client.connect(path)
    if sock is None:
        return None
    try:
        sock.settimeout(10)
        protocol.send(sock, {"op": op})
        message, _ = protocol.receive(sock)
        return message
    except (OSError, EOFError, ValueError):
        return None
    finally:
        sock.close()


def stop(path: str, wait: float = 10.0) -> int | None:
    """Stop the daemon at `path` and wait until it has gone; its pid, or None
    when there was none."""
    answer = ask(path, "stop")
    if not answer or "stopping" not in answer:
        return None
    pid = int(answer["stopping"])
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.02)
    return pid


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not os.path.isdir("/proc")
