"""Bytecode for the discovery child, compiled ahead of it on the other core.

Discovery imports every candidate module in a child process, and compiling
their sources is the largest part of that child's time (user modules are
imported without writing `__pycache__` into the repository). Meanwhile the
parent parses the same sources for their imports. So the parent compiles each
module from the tree it parsed anyway and leaves the bytecode in the local
cache (`pyc/<root key>/<path>c`), in the order the child will import them;
the child loads it instead of compiling when it is there and valid.

The files are "checked hash-based" pycs (PEP 552): the child reads the source
and loads the bytecode only if the source's hash is the one recorded, so an
edit -- even one that keeps the size and mtime -- is never served stale
bytecode. A file that is missing, torn or foreign is ignored and the source
compiled as usual. Nothing here travels through the shared cache.
"""

from __future__ import annotations

import marshal
import os
import sys
from importlib.util import MAGIC_NUMBER, source_hash

_FLAGS = (0b11).to_bytes(4, "little")  # hash-based, check the source


def directory(cache_root: str, root: str) -> str:
    from .hashing import key_of

    return os.path.join(cache_root, "pyc", key_of(["pyc", root, sys.implementation.cache_tag])[:24])


def _path(pyc_dir: str, rel: str) -> str:
    return os.path.join(pyc_dir, rel + "c")


def _header(source: bytes) -> bytes:
    return MAGIC_NUMBER + _FLAGS + source_hash(source)


def fresh(pyc_dir: str, rel: str, source: bytes) -> bool:
    """Whether the bytecode kept for `rel` was compiled from `source`."""
    try:
        with open(_path(pyc_dir, rel), "rb") as f:
            return f.read(16) == _header(source)
    except OSError:
        return False


def write(pyc_dir: str, rel: str, source: bytes, code) -> None:
    dest = _path(pyc_dir, rel)
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(_header(source) + marshal.dumps(code))
        os.replace(tmp, dest)  # never a half-written file under the real name
    except OSError:
        pass  # only speed is lost


def load(pyc_dir: str, rel: str, source: bytes):
    """The code object kept for `rel` if it was compiled from `source`, else None."""
    try:
        with open(_path(pyc_dir, rel), "rb") as f:
            data = f.read()
    except OSError:
        return None
    if data[:16] != _header(source):
        return None
    try:
        code = marshal.loads(memoryview(data)[16:])
    except (ValueError, EOFError, TypeError):
        return None
    return code if type(code).__name__ == "code" else None


def install(pyc_dir: str, root: str) -> None:
    """In the discovery child: load the kept bytecode of modules under `root`."""
    from importlib.machinery import SourceFileLoader

    original = SourceFileLoader.get_code
    prefix = root.rstrip("/") + "/"

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        if path.startswith(prefix) and path.endswith(".py"):
            try:
                source = self.get_data(path)
            except OSError:
                source = None
            if source is not None:
                code = load(pyc_dir, path[len(prefix):], source)
                if code is not None:
                    return code
        return original(self, fullname)

    SourceFileLoader.get_code = get_code
