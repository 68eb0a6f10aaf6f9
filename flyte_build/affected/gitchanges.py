"""What git says changed under the root since a revision, and that revision's tree.

The change set is the union of `git diff -M REV` (every commit since REV plus
the staged and unstaged edits of the working tree, renames paired up) and the
untracked files git does not ignore (new files nobody added yet). Paths are
POSIX and relative to the flyte-build root, which may be a subdirectory of
the git work tree; changes outside the root are dropped.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..archives.tarsafe import extract_all


@dataclass(frozen=True)
class Change:
    path: str  # relative to the root; for a rename, the new name
    status: str  # modified | added | deleted | renamed | type-changed
    old_path: str | None = None  # a rename's old name

    def paths(self) -> tuple[str, ...]:
        return (self.path, self.old_path) if self.old_path else (self.path,)

    def to_json(self) -> dict:
        d = {"path": self.path, "status": self.status}
        if self.old_path:
            d["old_path"] = self.old_path
        return d


@dataclass(frozen=True)
class Changes:
    rev: str  # as the user wrote it
    commit: str  # the full sha it resolved to
    toplevel: Path  # the git work tree
    prefix: str  # the root relative to the work tree ("" when they are one)
    changes: tuple[Change, ...]

    def by_path(self) -> dict[str, Change]:
        """Every path a change touches (both names of a rename) -> the change."""
        out: dict[str, Change] = {}
        for c in self.changes:
            for p in c.paths():
                out.setdefault(p, c)
        return out


_STATUS = {"M": "modified", "A": "added", "D": "deleted", "R": "renamed", "C": "added", "T": "type-changed"}


def _git(cwd: Path, *args: str, binary: bool = False):
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise UserError("git is not installed; `--since`/`--changed-since` need git") from None
    if proc.returncode != 0:
        return None, proc.stderr.decode(errors="replace").strip()
    return (proc.stdout if binary else proc.stdout.decode("utf-8", errors="surrogateescape")), ""


def _under(prefix: str, path: str) -> str | None:
    if not prefix:
        return path
    return path[len(prefix) + 1 :] if path.startswith(prefix + "/") else None


def resolve(root: Path, rev: str) -> tuple[Path, str, str]:
    """(work tree, prefix of the root in it, full commit sha of `rev`)."""
    top, err = _git(root, "rev-parse", "--show-toplevel")
    if top is None:
        raise UserError(f"{root} is not inside a git repository ({err}); `--since` compares git revisions")
    toplevel = Path(top.strip()).resolve()
    prefix = Path(os.path.relpath(Path(root).resolve(), toplevel)).as_posix()
    prefix = "" if prefix == "." else prefix
    # `--end-of-options` keeps a revision starting with "-" from being read as a flag
    sha, _ = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if not sha:
        raise UserError(f"unknown revision {rev!r}: git cannot resolve it to a commit in {toplevel}")
    return toplevel, prefix, sha.strip()


def changes_since(root: Path, rev: str) -> Changes:
    toplevel, prefix, commit = resolve(root, rev)
    out: dict[str, Change] = {}
    diff, err = _git(toplevel, "diff", "--name-status", "-z", "-M", "--no-ext-diff", commit, "--")
    if diff is None:
        raise UserError(f"git diff {rev} failed: {err}")
    fields = diff.split("\0")
    i = 0
    while i < len(fields) and fields[i]:
        code = fields[i]
        kind = _STATUS.get(code[0], "modified")
        if code[0] in "RC":
            old, new = fields[i + 1], fields[i + 2]
            i += 3
        else:
            old, new = None, fields[i + 1]
            i += 2
        new_rel, old_rel = _under(prefix, new), (_under(prefix, old) if old else None)
        if kind == "renamed" and (new_rel is None or old_rel is None):
            # moved across the root's edge: inside, it is a plain add or delete
            if new_rel is not None:
                out[new_rel] = Change(new_rel, "added")
            if old_rel is not None:
                out[old_rel] = Change(old_rel, "deleted")
            continue
        if new_rel is None:
            continue
        out[new_rel] = Change(new_rel, kind, old_rel if kind == "renamed" else None)
    untracked, err = _git(toplevel, "ls-files", "--others", "--exclude-standard", "-z", "--", prefix or ".")
    if untracked is None:
        raise UserError(f"git ls-files failed: {err}")
    for p in untracked.split("\0"):
        rel = _under(prefix, p) if p else None
        if rel and rel not in out:
            out[rel] = Change(rel, "added")
    return Changes(rev, commit, toplevel, prefix, tuple(out[k] for k in sorted(out)))


def export_tree(toplevel: Path, commit: str, prefix: str, dest: Path) -> None:
    """Write the files of `commit` under `prefix` into `dest` (no .git, no working-tree edits)."""
    treeish = f"{commit}:{prefix}" if prefix else commit
    data, err = _git(toplevel, "archive", "--format=tar", treeish, binary=True)
    if data is None:
        raise UserError(f"git archive {commit[:12]} failed: {err}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        # the archive is git's own output for a tree of ours; the filter still
        # refuses absolute names, `..` and links leading out of `dest`
        extract_all(tar, dest, skip_outside_links=True)  # the walk skips links out of the root too


# flyte's config lookup from the root (see discovery_reads.flyte_config_candidates)
_FLYTE_CONFIGS = ("config.yaml", ".flyte/config.yaml")


def export_mirror(changes: Changes, dest: Path) -> Path:
    """The revision's tree of the root, laid out as in the work tree: at
    `dest/<prefix>`, with `dest` a git repository whose index holds the
    revision (its objects borrowed from the work tree's repository, nothing
    copied). So what the modules see at import -- git's answers, flyte's config
    lookup up to the git root -- is what they see in the work tree. flyte's
    config files the work tree has and the revision lacks (an ignored
    `.flyte/config.yaml`: this run's own configuration, as `--config` is) are
    copied in. Returns the root."""
    root = dest / changes.prefix if changes.prefix else dest
    export_tree(changes.toplevel, changes.commit, changes.prefix, root)
    common, err = _git(changes.toplevel, "rev-parse", "--path-format=absolute", "--git-common-dir")
    if common is None:
        raise UserError(f"git rev-parse failed in {changes.toplevel}: {err}")
    for args in (("init", "-q"), ("read-tree", changes.commit)):
        if args[0] == "read-tree":
            alternates = dest / ".git" / "objects" / "info" / "alternates"
            alternates.write_text(str(Path(common.strip()) / "objects") + "\n")
        out, err = _git(dest, *args)
        if out is None:
            raise UserError(f"git {args[0]} of the revision failed: {err}")
    wanted = [f"{changes.prefix}/{c}" if changes.prefix else c for c in _FLYTE_CONFIGS] + [".flyte/config.yaml"]
    for rel in dict.fromkeys(wanted):
        src, there = changes.toplevel / rel, dest / rel
        if src.is_file() and not there.exists() and not there.is_symlink():
            there.parent.mkdir(parents=True, exist_ok=True)
            there.write_bytes(src.read_bytes())
    return root
