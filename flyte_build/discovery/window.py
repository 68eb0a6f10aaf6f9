"""Bundle work the parent does while discovery's child is still running.

In a cold build the child imports every module (flyte's own work, on one
core) while the parent compiles them for it on the other; the parent is
usually done first and then only waited. Two parts of the build that follows
do not depend on the child's answer: each module's imports resolve the same
whichever environments the child finds (given the search roots), and each
file's archive member deflates to the same bytes whichever bundle takes it.
So while the child runs, and only while it runs, the parent resolves each
candidate's imports (and its packages' `__init__.py`) and deflates its
member (`archives.tar_gz.deflate_ahead`), one file at a time; whatever is left
when the child ends is done later as before.

The resolutions are taken with the search roots the configuration gives
(the root and its source roots). They are used only if discovery's sys.path
adds none (the engine checks the scope, `engine.import_edges.with_carried`),
each with its deciding directories' mtimes when those prove the lookups saw
the current listing (a later change is seen by the next run). A bundle is the same bytes
with or without this work (`tests/test_recorded_digests.py`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..archives import tar_gz
from ..stores.file_digests import RACY_SECONDS
from . import imports

_POLL_EVERY = 8  # files between two looks at whether the child still runs


def ahead(root: Path, source_roots, files: list[str], digests, running) -> dict:
    """Resolve and deflate `files` (the candidates and their packages' `__init__.py`)
    while `running()`; the resolutions, in the form `carried_imports.verified`
    gives (what `engine.import_edges.with_carried` takes)."""
    from ..engine.import_edges import import_records

    resolver = imports.Resolver(root, imports.search_roots(root, source_roots, ()))
    real_root = str(resolver.root)
    prefix = real_root.rstrip("/") + "/"
    fresh = time.time_ns() - int(RACY_SECONDS * 1e9)
    resolved: dict[str, list] = {}
    mtimes: dict[str, int | None] = {}
    for i, rel in enumerate(files):
        if i % _POLL_EVERY == 0 and not running():
            break
        path = prefix + rel
        try:
            hex_ = digests.digest(path)[0]
            records = import_records(path, hex_, digests)
            targets = resolver.targets(path, records)
            decided = resolver.decided_by(path, records)
        except (OSError, SyntaxError, ValueError):
            continue  # reported where it matters, by the closure
        for d in decided:
            if d not in mtimes:
                mtimes[d] = _mtime_seen(d, fresh)
        resolved[path] = [hex_, sorted(targets), sorted(decided)]
        _deflate(rel, path, hex_)
    return {"scope": [str(r) for r in resolver.search_roots], "files": resolved, "mtimes": mtimes} if resolved else {}


def _mtime_seen(d: str, fresh: int) -> int | None:
    """The mtime that stands for `d`'s listing as this run's lookups saw it:
    its mtime now, when older than `fresh` (the loop's start less the racy
    window: a directory changed since the loop began has a newer one, so an
    old mtime proves the lookups saw its current listing); else None (the
    next run resolves its files again)."""
    try:
        m = os.stat(d).st_mtime_ns
    except OSError:
        return None
    return m if m < fresh else None


def _deflate(rel: str, path: str, hex_: str) -> None:
    try:
        tar_gz.deflate_ahead(rel, path, hex_)
    except (OSError, tar_gz.FileChanged):
        pass  # the bundle reads it again and says so
