"""`extractall` with the "data" filter, also on Pythons that lack filters.

Extraction filters arrived in 3.10.12 and 3.11.4; Debian 12's own Python is
3.11.2, and flyte-build supports 3.10+. There `filter="data"` is a TypeError,
so the same refusals are made by hand (`_checked_members`): absolute names,
`..`, special files and links leading out of `dest`; group/other write and
set-id bits dropped. By hand, links are judged on their names alone (nothing
is resolved on disk, where a link extracted earlier could redirect a later
check), and no member may lie under a link of the same archive -- that is how
a chain (`d -> .`, then `d/e -> ..`, then `e/x`) would walk out of `dest`.

`skip_outside_links=True` leaves out links leading out of `dest` instead of
refusing the archive (a git tree with a committed symlink out of the root:
the walk skips those too).
"""

from __future__ import annotations

import os
import posixpath
import tarfile


def _escapes(path: str, links: frozenset[str] | set[str] = frozenset()) -> bool:
    """Whether a relative POSIX path leaves its base, walked by name alone; a
    step through one of `links` counts as leaving (where it leads is not
    known by name)."""
    if posixpath.isabs(path):
        return True
    stack: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return True
            stack.pop()
        else:
            stack.append(part)
            if "/".join(stack) in links:
                return True
    return False


def _link_escapes(m: tarfile.TarInfo, links: frozenset[str] | set[str] = frozenset()) -> bool:
    if m.issym():
        # the link itself may be named by its own target's walk only through its parents
        return _escapes(posixpath.join(posixpath.dirname(m.name), m.linkname), links)
    if m.islnk():
        return _escapes(m.linkname, links)
    return False


def _checked_members(members: list[tarfile.TarInfo], skip_outside_links: bool) -> list[tarfile.TarInfo]:
    kept = []
    links: set[str] = set()
    for m in members:
        name = posixpath.normpath(m.name)
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise tarfile.ExtractError(f"{m.name!r}: not a regular file, directory or link")
        if m.name.startswith("/") or _escapes(m.name):
            raise tarfile.ExtractError(f"{m.name!r}: outside the destination")
        if (m.issym() or m.islnk()) and _link_escapes(m, links):
            if skip_outside_links:
                continue
            raise tarfile.ExtractError(f"{m.name!r}: a link leading outside the destination")
        parts = name.split("/")
        if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
            raise tarfile.ExtractError(f"{m.name!r}: lies under a link of the same archive")
        if m.issym():
            links.add(name)
        if m.mode is not None:
            m.mode &= 0o755
        # owned by whoever extracts (empty names: old tarfile then keeps these ids)
        m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
        kept.append(m)
    return kept


def extract_all(tar: tarfile.TarFile, dest, skip_outside_links: bool = False) -> None:
    if hasattr(tarfile, "data_filter"):
        members = tar.getmembers()
        if skip_outside_links:
            members = [m for m in members if not ((m.issym() or m.islnk()) and _link_escapes(m))]
        tar.extractall(dest, members=members, filter="data")
        return
    fallback_extract(tar, dest, skip_outside_links)


def fallback_extract(tar: tarfile.TarFile, dest, skip_outside_links: bool = False) -> None:
    """The hand-made refusals (used where tarfile has no filters; tested everywhere)."""
    members = _checked_members(tar.getmembers(), skip_outside_links)
    tar.extractall(dest, members=members)
