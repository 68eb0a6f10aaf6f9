"""The wire format between the client and the daemon: length-prefixed JSON
messages on a Unix stream socket, the first one carrying the client's
stdin, stdout and stderr as file descriptors (SCM_RIGHTS).

Passing the descriptors, not copying bytes, is what makes the command in the
daemon see the client's own terminal: `isatty`, the width and colour are the
terminal's, and output arrives in order with no relay. Imported by the thin
client, so it uses only `socket`, `os` and `json`.
"""

from __future__ import annotations

import json
import socket

HEADER = 4
MAX_MESSAGE = 64 * 1024 * 1024  # an environment is kilobytes; anything bigger is not ours
MAX_FDS = 3


def encode(message: dict) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode("utf-8", "surrogateescape")
    return len(body).to_bytes(HEADER, "big") + body


def send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = encode(message)
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        data = data[sent:]
    if data:
        sock.sendall(data)


def _read_exactly(sock: socket.socket, n: int, got: bytes = b"") -> bytes:
    while len(got) < n:
        chunk = sock.recv(min(n - len(got), 1 << 20))
        if not chunk:
            raise EOFError("the peer closed the connection")
        got += chunk
    return got


def receive(sock: socket.socket, with_fds: bool = False) -> tuple[dict, list[int]]:
    """One message and the descriptors that came with it. EOFError when the
    peer hung up before a whole message, ValueError for a malformed one."""
    fds: list[int] = []
    if with_fds:
        first, fds, _flags, _addr = socket.recv_fds(sock, 65536, MAX_FDS)
        if not first:
            _close(fds)
            raise EOFError("the peer closed the connection")
    else:
        first = sock.recv(HEADER)
        if not first:
            raise EOFError("the peer closed the connection")
    try:
        head = _read_exactly(sock, HEADER, first[:HEADER])
        size = int.from_bytes(head[:HEADER], "big")
        if size > MAX_MESSAGE:
            raise ValueError(f"a message of {size} bytes")
        body = _read_exactly(sock, size, first[HEADER:])[:size]
        message = json.loads(body.decode("utf-8", "surrogateescape"))
        if not isinstance(message, dict):
            raise ValueError("a message that is not an object")
    except BaseException:
        _close(fds)
        raise
    return message, fds


def _close(fds: list[int]) -> None:
    import os

    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
