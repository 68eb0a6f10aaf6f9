"""Who is on the other end of a Unix socket (SO_PEERCRED): only the daemon's
own user may run commands in it, whatever the socket file's mode says."""

from __future__ import annotations

import socket
import struct

_CRED = struct.Struct("3i")  # pid, uid, gid


def credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected."""
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


def refusal(sock: socket.socket, uid: int) -> str | None:
    """Why this peer may not use the daemon of user `uid`, or None when it may."""
    try:
        _pid, peer_uid, _gid = credentials(sock)
    except OSError as exc:
        return f"cannot tell who connected ({exc.strerror})"
    if peer_uid != uid:
        return f"uid {peer_uid} may not use the resident process of uid {uid}"
    return None
