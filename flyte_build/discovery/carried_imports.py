"""Resolved imports carried in a shared discovery entry.

A fresh CI machine that reads a discovery result from the shared cache still
had to resolve every file's imports to find the bundles' closures: tens of
thousands of `isdir`/`isfile` lookups, most of such a build's own work. The
writer already resolved them, so the entry carries, for every module it read,
the files its imports resolve to and the directories whose listings decided
that (as `imports.Resolver.decided_by` names them), each directory with the
digest of its listing.

A resolution depends on nothing but the file's import records (fixed by its
digest), the search roots and whether each name looked up is a directory, a
file or absent in those directories. So a reader uses a carried resolution
only when, here, the file has the digest the entry names, the search roots are
the same (relative to the root) and every deciding directory lists the same
names with the same kinds; any other file is resolved as before. Every name
is a plain relative path inside the root, else the entry is refused. The
entry is signed (see `shared_discovery`): an unsigned one is never read.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from . import imports
from ..stores.file_digests import RACY_SECONDS

_HEX = re.compile(r"[0-9a-f]{64}")
ROOT_DIR = "."  # how the root itself is named among the directories


def listing_digest(d: str) -> str | None:
    """sha256 of a directory's names that an import could look up, each with its
    kind as `os.path.isdir` and `os.path.isfile` see it (symlinks followed); None
    when it cannot be listed. A resolution asks only for `NAME`, `NAME.py` and
    `NAME/__init__.py` with NAME a module name's part, an identifier; so a name
    like `build.log`, `.venv` or `my-notes` decides nothing, and a checkout with
    one more of them (a CI log at the root) keeps every carried resolution."""
    try:
        with os.scandir(d) as it:
            entries = sorted(f"{e.name}\0{'d' if e.is_dir() else 'f' if e.is_file() else 'o'}" for e in it
                             if _importable(e.name))
    except OSError:
        return None
    return hashlib.sha256("\n".join(entries).encode("utf-8", "surrogateescape")).hexdigest()


def _importable(name: str) -> bool:
    # a name that is not ASCII is kept whatever it is: Python normalises those
    # identifiers (NFKC), so which of them a lookup meets is not this test's to say
    stem = name[:-3] if name.endswith(".py") else name
    return stem.isidentifier() or not name.isascii()


def _rel(path: str, real_root: str) -> str | None:
    if path == real_root:
        return ROOT_DIR
    prefix = real_root.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def collect(root: Path, search_roots: list[Path], files: dict[str, str | None], digests) -> dict | None:
    """The writer's side for the `.py` files among `files` (relative name ->
    digest, the entry's own list): {"scope": search roots, "dirs": [[directory,
    listing digest]], "names": the targets' names, "files": {name: [[target
    indices into names], [directory slots]]}} (each file's digest is the one
    `files` gives); None when a search root lies outside the root (a reader
    elsewhere could not check it)."""
    from ..engine.import_edges import import_records

    resolver = imports.Resolver(root, search_roots)
    real_root = str(resolver.root)
    scope = [_rel(str(r), real_root) for r in resolver.search_roots]
    if None in scope:
        return None
    dir_index: dict[str, int] = {}
    names: dict[str, int] = {}
    out_files: dict[str, list] = {}
    for rel, hex_ in sorted(files.items()):
        if not hex_ or not rel.endswith(".py"):
            continue
        path = os.path.join(real_root, rel)
        try:
            records = import_records(path, hex_, digests)
        except (OSError, SyntaxError, ValueError):
            continue
        targets = [_rel(t, real_root) for t in resolver.targets(path, records)]
        decided = [_rel(d, real_root) for d in resolver.decided_by(path, records)]
        if None in targets or None in decided:
            continue
        out_files[rel] = [sorted(names.setdefault(t, len(names)) for t in sorted(targets)),
                          sorted(dir_index.setdefault(d, len(dir_index)) for d in decided)]
    dirs = []
    for d in dir_index:  # insertion order = slot order
        listing = listing_digest(os.path.join(real_root, d) if d != ROOT_DIR else real_root)
        if listing is None:
            return None
        dirs.append([d, listing])
    return {"scope": scope, "dirs": dirs, "names": list(names), "files": out_files}


def _name_ok(rel) -> bool:
    return (isinstance(rel, str) and rel != "" and not rel.startswith("/") and "\\" not in rel and "\0" not in rel
            and not any(p in ("", ".", "..") for p in rel.split("/")))


def all_plain(names) -> bool:
    """`_name_ok` of every name, in a few C-level passes (an entry names thousands
    of files): with each name written as `/name/` (names apart by a newline),
    an empty, `.` or `..` part, a leading or a trailing slash all show as `//`,
    `/./` or `/../`."""
    names = list(names)
    if not {type(n) for n in names} <= {str}:
        return False
    if not names:
        return True
    joined = "/" + "/\n/".join(names) + "/"
    return not any(bad in joined for bad in ("//", "/./", "/../", "\\", "\0"))


def shape_ok(carried) -> bool:
    """Whether `carried` has the shape `collect` writes, every name a plain relative path."""
    if not isinstance(carried, dict):
        return False
    scope, dirs, names, files = carried.get("scope"), carried.get("dirs"), carried.get("names"), carried.get("files")
    if not (isinstance(scope, list) and all_plain(s for s in scope if s != ROOT_DIR)):
        return False
    if not (isinstance(dirs, list) and {type(e) for e in dirs} <= {list} and {len(e) for e in dirs} <= {2}
            and all_plain(e[0] for e in dirs if e[0] != ROOT_DIR)
            and all(type(e[1]) is str and _HEX.fullmatch(e[1]) for e in dirs)):
        return False
    if not (isinstance(names, list) and all_plain(names)):
        return False
    if not (isinstance(files, dict) and all_plain(files) and {type(e) for e in files.values()} <= {list}
            and {len(e) for e in files.values()} <= {2}):
        return False
    # every target index into `names`, every directory slot into `dirs`
    for part, bound in ((0, len(names)), (1, len(dirs))):
        lists = [e[part] for e in files.values()]
        if not {type(x) for x in lists} <= {list}:
            return False
        flat = [i for x in lists for i in x]
        if flat and not ({type(i) for i in flat} <= {int} and min(flat) >= 0 and max(flat) < bound):
            return False
    return True


def verified(carried, root: Path, search_roots: list[Path], digests_of: dict) -> dict:
    """The reader's side: the carried resolutions that hold here, as the local
    table of resolved imports keeps them (absolute paths): {"scope", "files":
    {path: [digest, targets, directories]}, "mtimes": {directory: mtime}}.
    Each directory's mtime is taken before it is listed (None when too recent
    to tell a later change apart), so a change after the listing is seen by
    the next run. Empty when nothing can be used. A file's digest is the one
    `digests_of` (the entry's file list) gives, checked where it is used (the
    local table's rule: its entry names the digest)."""
    if not shape_ok(carried):
        return {}
    real_root = os.path.realpath(root)
    scope = [str(Path(os.path.realpath(p))) for p in search_roots]
    if [_rel(s, real_root) for s in scope] != carried["scope"]:
        return {}
    inside = Inside(real_root)
    good: list[str | None] = []
    mtimes: dict[str, int | None] = {}
    fresh = _now_ns() - int(RACY_SECONDS * 1e9)
    for d, listing in carried["dirs"]:
        path = real_root if d == ROOT_DIR else os.path.join(real_root, d)
        try:
            m = os.stat(path).st_mtime_ns
        except OSError:
            good.append(None)
            continue
        ok = (d == ROOT_DIR or inside(d)) and listing_digest(path) == listing
        good.append(path if ok else None)
        if ok:
            mtimes[path] = m if m < fresh else None
    names = [os.path.join(real_root, t) if inside(t) else None for t in carried["names"]]
    files: dict[str, list] = {}
    for rel, (targets, slots) in carried["files"].items():
        hex_ = digests_of.get(rel)
        dirs = [good[i] for i in slots]
        paths = [names[i] for i in targets]
        if not isinstance(hex_, str) or None in dirs or None in paths or not inside(rel):
            continue
        files[os.path.join(real_root, rel)] = [hex_, paths, dirs]
    return {"scope": scope, "files": files, "mtimes": mtimes} if files else {}


class Inside:
    """Whether a plain relative name's real path stays inside the root (no
    symlink leads out): `discovery_reads.plain_inside` for names already known
    plain, with each directory's realpath asked once (an entry names thousands
    of files in a few hundred directories)."""

    def __init__(self, real_root: str):
        self.prefix = real_root.rstrip("/") + "/"
        self.real_root = real_root
        self._dirs: dict[str, bool] = {}
        self._names: dict[str, bool] = {}

    def __call__(self, rel: str) -> bool:
        ok = self._names.get(rel)
        if ok is None:
            ok = self._names[rel] = self._check(rel)
        return ok

    def _check(self, rel: str) -> bool:
        d, _, name = rel.rpartition("/")
        ok = self._dirs.get(d)
        if ok is None:
            real = os.path.realpath(os.path.join(self.real_root, d) if d else self.real_root)
            ok = self._dirs[d] = (real + "/").startswith(self.prefix)
        if not ok:
            return False
        path = os.path.join(self.real_root, rel)
        return not os.path.islink(path) or os.path.realpath(path).startswith(self.prefix)


def _now_ns() -> int:
    import time

    return time.time_ns()
