"""Telling, without the whole walk, that it would find the same candidate modules.

Discovery skips its walk while no directory it listed has a new mtime. But a
directory's mtime also changes when an editor saves a file by writing a new
one and renaming it over the old (vim, JetBrains' safe write, `sed -i`): the
names stay the same, and the walk (every directory, and in a git repository a
`git ls-files` process for git's verdict) ran again for nothing.

Here only the directories whose mtime changed are listed again. The last
walk's answer stands when each of them still holds exactly the candidate
modules, walked subdirectories and ignore files it held; any other name that
could matter (a new module or subdirectory, a symlink, a module that is not a
regular file) leaves the answer to the walk. A new directory the walk never
enters (`__pycache__`, `.venv`) and other files change nothing. Valid only while
the ignore files (and git's index) are unchanged: the caller checks their
digests first.
"""

from __future__ import annotations

import os

from ..archives.bundle_files import IGNORE_FILES, STANDARD_IGNORED_DIRS


def relisted(root, dirs: dict, candidates: list[str], ignore_files: list[str], fresh_before: int) -> dict | None:
    """The walked directories' mtimes now (None: too recent to trust, as the
    walk records them) when the walk would give `candidates` again; None
    when only the walk can tell."""
    modules = _by_directory(candidates)
    subdirs = _by_directory(d for d in dirs if d)
    ignores = _by_directory(f for f in ignore_files if f.rsplit("/", 1)[-1] in IGNORE_FILES)
    out: dict[str, int | None] = {}
    for rel, mtime in dirs.items():
        try:
            now = os.stat(os.path.join(root, rel) if rel else root).st_mtime_ns
            if mtime is None or now != mtime:
                listed = _listing(os.path.join(root, rel) if rel else str(root))
                if listed != (modules.get(rel, set()), subdirs.get(rel, set()), ignores.get(rel, set())):
                    return None
        except (OSError, _Unsure):
            return None
        out[rel] = now if now < fresh_before else None
    return out


class _Unsure(Exception):
    """A name in the directory that only the walk can judge."""


def _listing(path: str) -> tuple[set[str], set[str], set[str]]:
    """(candidate module names, subdirectories the walk enters, ignore files) of a directory."""
    modules, subdirs, ignores = set(), set(), set()
    with os.scandir(path) as it:
        for e in it:
            if e.is_symlink():
                raise _Unsure(e.name)
            if e.is_dir(follow_symlinks=False):
                if e.name not in STANDARD_IGNORED_DIRS:
                    subdirs.add(e.name)
            elif e.name in IGNORE_FILES:
                ignores.add(e.name)
            elif e.name.endswith(".py") and e.name != "__init__.py":
                if not e.is_file(follow_symlinks=False):
                    raise _Unsure(e.name)
                modules.add(e.name)
    return modules, subdirs, ignores


def _by_directory(paths) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in paths:
        d, _, name = p.rpartition("/")
        out.setdefault(d, set()).add(name)
    return out
