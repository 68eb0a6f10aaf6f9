"""Starting a resident process's warm discovery child in the background.

A command whose discovery the cache answered ran no child, so without this
the first edit after the resident process starts would be a cold discovery
(which then starts the warm child). `spawn` forks a helper off the command:
it leaves the command's terminal and session, launches the warm child on
the tree as it is now, waits for it and writes the handle, while the command
goes on and ends. The handle says `pending` (the helper's pid) meanwhile: the
next discovery waits for the helper instead of starting a second child.

An edit while the child imports could leave its modules older than the
files the snapshot records (it is taken after the import): when a file it
loaded or read, or a directory it listed, was modified after the child
started (less the stat cache's racy window), or is gone, the helper ends the
child and starts another (an edit made just before the command looks the
same); after three such starts it gives up and writes no handle.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from . import warm as warm_mod
from .. import atomic
from ..processes import children
from ..stores.file_digests import RACY_SECONDS

ATTEMPTS = 3


def spawn(warm, cfg, request: dict, key: str, digests) -> None:
    """Fork the helper; return once it has marked the handle pending."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        os.read(r, 1)  # returns when the helper closed its end (marked, or gone)
        os.close(r)
        return
    code = 1
    try:
        os.close(r)
        os.setsid()  # not in the command's process group: its end does not end this
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the client's terminal or pipe: never held past the command
            os.dup2(null, fd)
        atomic.write_bytes(warm.handle, json.dumps({"key": key, "pending": os.getpid()}).encode())
        os.close(w)
        code = _start(warm, cfg, request, key, digests)
    finally:
        os._exit(code)


def _start(warm, cfg, request: dict, key: str, digests) -> int:
    """Launch the warm child; again (up to ATTEMPTS) while an edit may have raced its import."""
    for _ in range(ATTEMPTS):
        began = time.time_ns() - int(RACY_SECONDS * 1e9)
        tmp = tempfile.mkdtemp(prefix="flyte-build-warm-")
        try:
            child, _raw, why = warm_mod._launch(cfg, {**request, "owner": warm.owner}, key, digests,
                                                children.child_environ(), None, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            break
        if why:  # it cannot serve edits: no background start for these settings again
            shutil.rmtree(tmp, ignore_errors=True)
            atomic.write_bytes(warm.handle, json.dumps({"key": key, "unwarm": why}).encode())
            return 0
        if not _touched_since(str(cfg.root), child.snap, began):
            warm_mod.write_handle(warm.handle, key, child)
            return 0
        child.close()
        time.sleep(RACY_SECONDS)  # the edit that raced it (or was just made) is then older than the next start
    _drop(warm.handle)
    return 0


def _drop(handle: str) -> None:
    """No handle, unless another process wrote one meanwhile (not ours to remove)."""
    try:
        with open(handle) as f:
            if json.load(f).get("pending") == os.getpid():
                os.unlink(handle)
    except (OSError, ValueError, AttributeError):
        pass


def _touched_since(root: str, snap, began: int) -> bool:
    """Whether what the child imported may differ from what the snapshot says:
    a file it loaded is gone, or it, a file read, a directory listed or the
    directory of a path whose kind was asked changed since `began`."""
    checks = [(os.path.join(root, rel), True) for rel in snap.files]
    for kind, value in snap.reads:
        if kind == "environ":
            continue
        path = value if os.path.isabs(value) else os.path.join(root, value)
        checks.append((path, False))
        if kind == "stats" or not os.path.lexists(path):  # its presence counts: its directory tells
            checks.append((os.path.dirname(path), False))
    for path, must_exist in checks:
        try:
            st = os.lstat(path)
        except OSError:
            if must_exist:
                return True
            continue
        if max(st.st_mtime_ns, st.st_ctime_ns) >= began:
            return True
    return False
