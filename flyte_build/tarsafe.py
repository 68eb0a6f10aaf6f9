"""`extractall` with the "data" filter, also on Pythons that lack filters.

Extraction filters arrived in 3.10.12 and 3.11.4; Debian 12's own Python is
3.11.2, and flyte-build supports 3.10+. There `filter="data"` is a TypeError,
so the same refusals are made by hand: absolute names, `..`, special files
and links leading out of `dest`; group/other write and set-id bits dropped.
"""

from __future__ import annotations

import os
import tarfile


def extract_all(tar: tarfile.TarFile, dest) -> None:
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = os.path.realpath(dest)

    def inside(path: str) -> bool:
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    members = tar.getmembers()
    for m in members:
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise tarfile.ExtractError(f"{m.name!r}: not a regular file, directory or link")
        name = m.name.lstrip("/")
        if m.name != name or os.path.isabs(m.name) or not inside(os.path.join(root, name)):
            raise tarfile.ExtractError(f"{m.name!r}: outside the destination")
        if m.issym() and (os.path.isabs(m.linkname) or not inside(os.path.join(root, os.path.dirname(name), m.linkname))):
            raise tarfile.ExtractError(f"{m.name!r}: a link leading outside the destination")
        if m.islnk() and (os.path.isabs(m.linkname) or not inside(os.path.join(root, m.linkname))):
            raise tarfile.ExtractError(f"{m.name!r}: a link leading outside the destination")
        if m.mode is not None:
            m.mode &= 0o755
        # owned by whoever extracts (empty names: old tarfile then keeps these ids)
        m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
    tar.extractall(dest, members=members)
