"""What makes a running daemon stale: flyte-build's own files (its package and
built-in rules) and the interpreters it serves. Each is a tuple of stat
signatures, compared before every command (about 150 stats, well under a
millisecond)."""

from __future__ import annotations

import os
import sys


def _files(top: str):
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".py", ".typed", ".toml", ".txt", ".json")):
                yield os.path.join(dirpath, name)


def _signature(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return (path, None)
    return (path, st.st_size, st.st_mtime_ns, st.st_ino)


def source() -> tuple:
    """flyte-build's modules and built-in rules, as they are on disk now."""
    from ..engine import rulesets

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tops = [package, str(rulesets.builtin_dir())]
    return tuple(_signature(p) for top in dict.fromkeys(tops) for p in _files(top))


def interpreters(project: str, environ: dict) -> dict[str, tuple]:
    """The daemon's Python and the project's likely interpreters ($VIRTUAL_ENV,
    the project's .venv), each by path: one replaced (a new venv, an upgraded
    Python) makes the daemon stale, and the next command starts a fresh one."""
    candidates = [sys.executable, os.path.join(project, ".venv", "bin", "python")]
    if environ.get("VIRTUAL_ENV"):
        candidates.append(os.path.join(environ["VIRTUAL_ENV"], "bin", "python"))
    return {p: _signature(os.path.realpath(p)) for p in candidates}


def changed(seen: dict[str, tuple], now: dict[str, tuple]) -> str | None:
    """The first path whose signature moved since it was first seen (`seen`
    learns the new paths)."""
    for path, sig in now.items():
        if seen.setdefault(path, sig) != sig:
            return path
    return None
