"""A no-op answered by the resident process without statting the tree.

A client whose `build --json` has a snapshot (see stores.snapshot) asks the
daemon `{"op": "unchanged", "snapshot": path, "sig": sig}`. The daemon
answers `{"unchanged": True}` only when that very snapshot file (by its stat
signature) was found to hold by a full stat at watch generation G and the
watch is still at G; then it re-stats what no watch covers (symlinked or
hard-linked files, paths the walk skips, directories beyond the watch
limit). Otherwise it answers `{"unchanged": False, "generation": G,
"epoch": E}`: the client stats everything as without a daemon and, when all
holds, sends `{"op": "verified", ..., "generation": G, "epoch": E}` on a new
connection. G is read before the client's stats, the watch was set up
before G, and E names this daemon (a verification made against one that
ended meanwhile counts for nothing), so nothing changed between the stat
and the next answer goes unseen. The directories of what the snapshot
records outside the tree (the cache's entries, flyte-build's and flyte's
files) are watched from the first verification on; new watches move the
generation, so the second verification is the first to count on them.
"""

from __future__ import annotations

import os
import stat

from ..stores import snapshot
from .tree_watch import TreeWatch


class Verified:
    """A snapshot found to hold at `generation`; the lines the watch does
    not cover, to stat at every answer."""

    __slots__ = ("generation", "sig", "files", "dirs")

    def __init__(self, generation: int, sig: tuple, files: list[str], dirs: list[str]):
        self.generation, self.sig, self.files, self.dirs = generation, sig, files, dirs


class NoopAnswers:
    MAX = 64  # snapshots remembered (one per command line and environment)

    def __init__(self, watch: TreeWatch):
        self.watch = watch
        # a verification a client made against another daemon (one that ended
        # meanwhile) says nothing of this one's watch
        self.epoch = watch.epoch
        self.verified: dict[str, Verified] = {}
        self.answered = 0  # no-ops answered without a tree stat, for `daemon status`

    def unchanged(self, path: str, sig) -> tuple[bool, int]:
        """(whether the snapshot at `path` with `sig` still holds, the generation now)."""
        generation = self.watch.pump()
        entry = self.verified.get(path)
        if entry is None or not self.watch.ok or entry.generation != generation or entry.sig != tuple(sig or ()):
            return False, generation
        if not snapshot.stats_hold(entry.files, entry.dirs):
            return False, generation
        self.answered += 1
        return True, generation

    def verified_at(self, path: str, sig, generation: int) -> None:
        """The client found the snapshot at `path` (`sig`) to hold, statting
        after it read `generation`."""
        self.watch.pump()
        if not self.watch.ok or generation != self.watch.generation or not isinstance(path, str):
            return
        entry = _classify(self.watch, path, tuple(sig or ()), generation)
        if entry is None:
            self.verified.pop(path, None)
            return
        # watch where the rest lies too (the cache's entries, flyte-build's
        # and flyte's files): new watches move the generation, so this
        # entry is not kept and the next no-op's stat is the first they cover
        outside = {os.path.dirname(line.split(" ", 4)[4]) for line in entry.files}
        if self.watch.watch_flat(outside | {line.split(" ", 1)[1] for line in entry.dirs}):
            return
        if len(self.verified) >= self.MAX and path not in self.verified:
            self.verified.pop(next(iter(self.verified)))
        self.verified[path] = entry


def _classify(watch: TreeWatch, path: str, sig: tuple, generation: int) -> Verified | None:
    """The snapshot as the client read it (the same signature), with the lines
    the watch covers left out; None when it cannot be read as such."""
    try:
        with open(path, "rb") as f:
            if snapshot.signature(os.fstat(f.fileno())) != sig:
                return None
            data = f.read()
    except OSError:
        return None
    parsed = snapshot.parse(data, None)
    if parsed is None:
        return None
    files, dirs, _out, _code = parsed
    try:
        own_files = [line for line in files if not _covered_file(watch, line.split(" ", 4)[4])]
        own_dirs = [line for line in dirs if not _covered_dir(watch, line.split(" ", 1)[1])]
    except IndexError:
        return None
    return Verified(generation, sig, own_files, own_dirs)


def _covered_file(watch: TreeWatch, path: str) -> bool:
    if not watch.covers(path, is_dir=False):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    # a symlink's target, or another name of the same file, changes unreported
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


def _covered_dir(watch: TreeWatch, path: str) -> bool:
    if not watch.covers(path, is_dir=True):
        return False
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
