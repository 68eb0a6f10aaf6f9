"""The wire format between the client and the daemon: length-prefixed
`marshal` messages on a Unix stream socket, the first one carrying the
client's stdin, stdout and stderr as file descriptors (SCM_RIGHTS).

Passing the descriptors, not copying bytes, is what makes the command in the
daemon see the client's own terminal: `isatty`, the width and colour are the
terminal's, and output arrives in order with no relay. Both ends are the same
Python (a daemon serves one interpreter, see `address.identity`), so
`marshal` is a format both read; it is loaded at every start, where `json`
would import `re` and the `socket` module `enum` and `selectors`: the thin
client uses `_socket` and this module alone.
"""

from __future__ import annotations

import marshal
import sys
from _socket import CMSG_LEN, SCM_RIGHTS, SOL_SOCKET

HEADER = 4
MAX_MESSAGE = 64 * 1024 * 1024  # an environment is kilobytes; anything bigger is not ours
MAX_FDS = 3
_FD = 4  # bytes of one descriptor in SCM_RIGHTS data (a C int)


def encode(message: dict) -> bytes:
    body = marshal.dumps(message)
    return len(body).to_bytes(HEADER, "big") + body


def send(sock, message: dict, fds: list[int] | None = None) -> None:
    data = encode(message)
    if fds:
        rights = b"".join(fd.to_bytes(_FD, sys.byteorder, signed=True) for fd in fds)
        sent = sock.sendmsg([data], [(SOL_SOCKET, SCM_RIGHTS, rights)])
        data = data[sent:]
    if data:
        sock.sendall(data)


def _read_exactly(sock, n: int, got: bytes = b"") -> bytes:
    while len(got) < n:
        chunk = sock.recv(min(n - len(got), 1 << 20))
        if not chunk:
            raise EOFError("the peer closed the connection")
        got += chunk
    return got


def _rights(ancillary) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            usable = len(data) - len(data) % _FD
            fds += [int.from_bytes(data[i:i + _FD], sys.byteorder, signed=True) for i in range(0, usable, _FD)]
    return fds


def receive(sock, with_fds: bool = False) -> tuple[dict, list[int]]:
    """One message and the descriptors that came with it. EOFError when the
    peer hung up before a whole message, ValueError for a malformed one."""
    fds: list[int] = []
    if with_fds:
        first, ancillary, _flags, _addr = sock.recvmsg(65536, CMSG_LEN(MAX_FDS * _FD))
        fds = _rights(ancillary)
    else:
        first = sock.recv(HEADER)
    if not first:
        _close(fds)
        raise EOFError("the peer closed the connection")
    try:
        head = _read_exactly(sock, HEADER, first[:HEADER])
        size = int.from_bytes(head[:HEADER], "big")
        if size > MAX_MESSAGE:
            raise ValueError(f"a message of {size} bytes")
        body = _read_exactly(sock, size, first[HEADER:])[:size]
        try:
            message = marshal.loads(body)
        except (EOFError, TypeError) as exc:
            raise ValueError(f"a malformed message: {exc}") from None
        if not isinstance(message, dict):
            raise ValueError("a message that is not a dict")
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
