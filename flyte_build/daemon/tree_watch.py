"""The resident process's watch on the repository: inotify on every
directory under the project that the discovery walk enters, read by the
daemon's own loop (no thread: the daemon forks its commands).

Its one promise: `generation` moves whenever anything in a watched
directory may have changed, with the watches for a new directory set up
before the move. So a reader that took generation G, then statted the tree
and found it as recorded, knows the tree is still so while `generation` is
G. Any event counts (an editor's temp file and rename, a chmod, a new
`__pycache__`), and so does everything that makes the view doubtful: the
kernel's queue overflowing, a watch that could not be set (the user's
inotify limit, `max_dirs`), a watched directory moved; each bumps
`generation` and drops the history `changed_since` answers from.

Not watched, so a reader must stat them itself (see `covers`): directories
the walk skips (`.git`, `.venv`, `__pycache__` ... and the cache directory),
what lies behind a symlink, and a file with another hard link (a write
through the other name is reported to that name's directory only). Every
ancestor of a watched directory is watched for its own move or deletion (a
parent of the repository renamed and a new clone put in its place changes
every path without an event below); a directory whose ancestors cannot be
watched so (a symlink among them) is not watched.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time

from ..archives.bundle_files import STANDARD_IGNORED_DIRS

# <sys/inotify.h>
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_UNMOUNT, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x2000, 0x4000, 0x8000
IN_ONLYDIR, IN_DONT_FOLLOW, IN_MASK_ADD, IN_ISDIR = 0x01000000, 0x02000000, 0x20000000, 0x40000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
        | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)
# an ancestor of a watched directory: only its own move or deletion (which
# moves every path below it elsewhere without an event below)
ANCHOR_MASK = IN_MOVE_SELF | IN_DELETE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_MASK_ADD
_HEAD = 16  # struct inotify_event: int wd; uint32 mask, cookie, len; char name[len]

MAX_DIRS = 65_536  # beyond this many directories the watch gives up (every no-op then stats)
HISTORY = 20_000  # changed paths kept for changed_since
# the daemon's watch; in a command's fork, the parent's view as of the fork
RESIDENT: "TreeWatch | None" = None


class TreeWatch:
    """Watches `root` (its directories, not following symlinks, skipping
    STANDARD_IGNORED_DIRS and `skip`). Call `pump()` before reading
    `generation`; in a command's fork the object is the parent's view as of
    the fork (its descriptor is closed there: only the daemon reads it)."""

    def __init__(self, root: str, skip: tuple[str, ...] = (), max_dirs: int = MAX_DIRS):
        self.root, self.skip, self.max_dirs = os.path.abspath(root), tuple(os.path.abspath(s) for s in skip), max_dirs
        self.generation, self.failed, self.resets, self.last_reset = 0, None, 0, None
        # names this watch's generations: a G kept by another daemon's watch says nothing of this one
        self.epoch = f"{os.getpid()}.{time.time_ns()}"
        self.wds: dict[int, str] = {}
        self.dirs: dict[str, int] = {}
        self.flat: set[str] = set()  # watched for their own entries only (see watch_flat)
        self.anchors: dict[str, int] = {}  # ancestors, watched for their own move or deletion
        self._history: list[tuple[int, str]] = []
        self._since = 0  # the oldest generation changed_since can answer for
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            self.failed = f"inotify_init1: {os.strerror(ctypes.get_errno())}"
            return
        self._add_root()

    def fileno(self) -> int:
        return self.fd

    @property
    def ok(self) -> bool:
        return self.failed is None

    def covers(self, path: str, is_dir: bool) -> bool:
        """Whether a change to `path` (a directory's listing or mtime when
        `is_dir`, else the file's stat) moves `generation`."""
        if self.failed is not None or not os.path.isabs(path):
            return False
        return (path if is_dir else os.path.dirname(path)) in self.dirs

    def changed_since(self, generation: int, epoch: str | None = None) -> frozenset[str] | None:
        """The absolute paths reported changed after `generation` (a
        directory's own path for a change to its listing or attributes), or
        None when that is not known (a reset since, history trimmed, or
        `epoch` given and not this watch's)."""
        if epoch is not None and epoch != self.epoch:
            return None
        if self.failed is not None or generation < self._since or generation > self.generation:
            return None
        return frozenset(p for g, p in self._history if g > generation)

    def watch_flat(self, dirs) -> bool:
        """Also watch these directories (outside the tree: the cache's, flyte's),
        each for its own entries only. Whether any watch was new: then the
        generation moves, so a reader that statted before the watch existed
        does not count on it."""
        added = False
        for d in sorted(set(dirs) - set(self.dirs)):
            if self.failed is not None or len(self.dirs) >= self.max_dirs or not os.path.isabs(d):
                break
            if self._anchor(d) and self._watch(d):
                self.flat.add(d)
                added = True
        if added:
            self.generation += 1
            self._since = self.generation
            self._history = []
        return added

    def pump(self) -> int:
        """Read every queued event; the generation after them."""
        if self.fd < 0:
            return self.generation
        changed: list[str] = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                self._reset(f"reading inotify events: {exc.strerror}")
                break
            changed += self._events(data)
        if changed and self.root not in self.dirs and self.failed is None:
            self._add_root()  # the root (or an ancestor) moved or went: watch what is there now
        if changed:
            self.generation += 1
            self._history += [(self.generation, p) for p in changed]
            if len(self._history) > HISTORY:
                self._since = self._history[-HISTORY][0] - 1
                self._history = [(g, p) for g, p in self._history if g > self._since]
        return self.generation

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _events(self, data: bytes) -> list[str]:
        changed, at = [], 0
        while at + _HEAD <= len(data):
            wd = int.from_bytes(data[at:at + 4], "little", signed=True)
            mask = int.from_bytes(data[at + 4:at + 8], "little")
            size = int.from_bytes(data[at + 12:at + 16], "little")
            name = data[at + _HEAD:at + _HEAD + size].split(b"\0", 1)[0]
            at += _HEAD + size
            if mask & IN_Q_OVERFLOW:
                self._reset("the kernel's event queue overflowed")
                changed.append(self.root)
                continue
            where = self.wds.get(wd)
            if where is None:
                continue
            path = os.path.join(where, os.fsdecode(name)) if name else where
            changed.append(path)
            self._follow(mask, path, bool(name), where in self.flat)
        return changed

    def _follow(self, mask: int, path: str, child: bool, flat: bool) -> None:
        """Keep the watches matching the tree: a new directory is watched
        before the event counts (not below a flat one); a moved one is
        dropped (its watches would name the old paths) and, under its new
        name, watched afresh."""
        if mask & IN_IGNORED:
            self._forget(path, rm=False)
        elif not child and mask & (IN_MOVE_SELF | IN_DELETE_SELF | IN_UNMOUNT):
            self._forget(path, rm=True)
        elif child and mask & IN_ISDIR and mask & IN_MOVED_FROM:
            self._forget(path, rm=True)
        elif child and mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO) and not flat:
            self._add_tree(path)

    def _forget(self, top: str, rm: bool) -> None:
        """Stop watching `top` and everything below it (directories and anchors)."""
        prefix = top + os.sep
        for table in (self.dirs, self.anchors):
            for path in [p for p in table if p == top or p.startswith(prefix)]:
                wd = table.pop(path)
                if self.wds.get(wd) == path:
                    del self.wds[wd]
                    if rm:
                        self._libc.inotify_rm_watch(self.fd, wd)
                self.flat.discard(path)

    def _add_root(self) -> None:
        if os.path.isdir(self.root) and self._anchor(self.root):
            self._add_tree(self.root)

    def _anchor(self, d: str) -> bool:
        """Watch the ancestors of `d` for their own move or deletion: a parent of
        the repository renamed (and a new clone put in its place) moves every
        watched path without an event in any watched directory. False when one
        cannot be watched: then `d` is not watched either."""
        p = os.path.dirname(d)
        while p not in self.anchors and p not in self.dirs:
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(p), ANCHOR_MASK)
            if wd < 0:
                return False
            self.anchors[p] = wd
            self.wds.setdefault(wd, p)
            if os.path.dirname(p) == p:
                break
            p = os.path.dirname(p)
        return True

    def _reset(self, why: str) -> None:
        """A doubtful view: forget the history, watch what was missed."""
        self.resets += 1
        self._since = self.generation + 1
        self._history = []
        self.last_reset = why
        if self.failed is None:
            self._add_root()

    def _wanted(self, path: str, name: str) -> bool:
        return name not in STANDARD_IGNORED_DIRS and path not in self.skip

    def _add_tree(self, top: str) -> None:
        """Watch `top` and the directories below it, each before listing it,
        so a directory made meanwhile is either listed or reported."""
        stack = [top] if self._wanted(top, os.path.basename(top)) or top == self.root else []
        while stack and self.failed is None:
            d = stack.pop()
            if d not in self.dirs and not self._watch(d):
                continue
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False) and self._wanted(e.path, e.name):
                            stack.append(e.path)
            except OSError:
                continue  # gone (its parent's event says so) or unreadable: what is below stays unwatched

    def _watch(self, d: str) -> bool:
        if len(self.dirs) >= self.max_dirs:
            self.failed = f"more than {self.max_dirs} directories to watch"
            return False
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(d), MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOSPC, errno.ENOMEM, errno.EMFILE):
                self.failed = f"inotify_add_watch: {os.strerror(err)} (fs.inotify.max_user_watches)"
            return False
        old = self.wds.get(wd)
        if old is not None and old != d:  # the same directory under another name (a bind mount): drop the old name
            self.dirs.pop(old, None)
        self.wds[wd] = d
        self.dirs[d] = wd
        return True
