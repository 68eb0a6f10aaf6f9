"""What discovery's child actually read.

Discovery's result depends on more than the modules it imported: a module may
read a data file at import (`settings.json` choosing the image and memory),
list a directory, or read environment variables (`STAGE=prod`), and flyte
reads its own config. The child records all of it (`recorder.ReadRecorder`: an audit
hook for `open`, `os.listdir` and `os.scandir`, and a recording
`os.environ`); the parent turns the records into witnesses (a digest per file,
per directory listing and per variable) that are part of the discovery
cache's validity and of the serialization key, so a change to any of them
means a new discovery, new specs and a new version. Files of the Python
installation and of installed packages are left out: the Python and flyte
versions already key discovery.

This module is the parent's side: the witnesses and their validity, and the
child's progress file read back. The child's side (the recording, the progress
file written) is `recorder`'s; the fingerprints of compiled modules are
`code_prints`'. How the child runs (its own session, a deadline, dying with its
parent) is `children`'s.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from ..hashing import key_of
from .recorder import ENV_ALL, KINDS

_HEX64 = re.compile(r"[0-9a-f]{64}")


def read_progress(path: str) -> tuple[str, str] | None:
    """The module the child named last (`write_progress`), or None."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            tail = f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None
    last = tail.rstrip("\n").rsplit("\n", 1)[-1]
    module, _, file = last.partition("\t")
    return (module, file) if module else None


def _file_digest(path: str, digests) -> str | None:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            # a directory opened for os.walk (its listing is what matters), or a FIFO or
            # device (a witness from the shared cache could name one): never read
            return None
        return digests.digest(path)[0]
    except OSError:
        return None  # missing (or unreadable): its appearing later is a change


def _listing(path: str) -> str | None:
    """The digest of a directory's names, less what no bundle ever ships and
    only a working tree has (`__pycache__`, `.venv`, tool caches, `*.pyc`):
    Python writing bytecode is no change, and an exported revision has none."""
    from ..archives.bundle_files import STANDARD_IGNORED_DIRS, STANDARD_IGNORED_SUFFIXES

    try:
        names = os.listdir(path)
    except OSError:
        return None
    return key_of(sorted(n for n in names if n not in STANDARD_IGNORED_DIRS and not n.endswith(STANDARD_IGNORED_SUFFIXES)))


def env_value(name: str, environ=os.environ) -> str | None:
    """A variable's value as it enters a key: hashed (values may be secrets), None when unset.
    ENV_ALL stands for the whole environment."""
    if name == ENV_ALL:
        return key_of(sorted(environ.items()))
    value = environ.get(name)
    return None if value is None else hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def flyte_config_candidates(root: Path, environ=os.environ) -> list[str]:
    """Every file flyte's config lookup may pick (`flyte.config` reads the first
    that exists: ./config.yaml, ./.flyte/config.yaml, <git root>/.flyte/config.yaml,
    $UCTL_CONFIG, $FLYTECTL_CONFIG, ~/.union/config.yaml, ~/.flyte/config.yaml),
    from the child's working directory, the root. Flyte tests existence with a
    stat, which no audit hook sees, so all of them are witnessed: one appearing
    or changing is a change."""
    out = [root / "config.yaml", root / ".flyte" / "config.yaml"]
    top = git_top(root)
    if top is not None:
        out.append(top / ".flyte" / "config.yaml")
    out += [Path(environ[v]) for v in ("UCTL_CONFIG", "FLYTECTL_CONFIG") if environ.get(v)]
    home = Path(environ.get("HOME") or Path.home())
    out += [home / ".union" / "config.yaml", home / ".flyte" / "config.yaml"]
    return [os.path.abspath(root / p) for p in out]


def witnesses(reads: dict, root: Path, digests, skip: set[str]) -> dict:
    """{"files": {path: digest}, "dirs": {path: listing digest}, "environ": {name: value digest}}
    for the recorded reads; `skip` (relative names already witnessed, the
    imported modules) left out. Paths under the root are named relative to it,
    those elsewhere in its git work tree by `../` (the git root's
    `.flyte/config.yaml` is `../.flyte/config.yaml` for a project in `ml/`),
    flyte's per-user files by `~/`: the names enter the specs keys, which must
    not depend on where the repository is checked out."""
    name = _namer(root)
    files = {}
    for p in [*reads.get("files", ()), *flyte_config_candidates(root)]:
        n = name(p)
        if n not in skip:
            files[n] = _file_digest(p, digests)
    dirs = {name(p): _listing(p) for p in reads.get("dirs", ())}
    environ = {n: env_value(n) for n in reads.get("environ", ())}
    out = {"files": files, "dirs": dirs, "environ": environ}
    stats = _stat_witnesses(reads.get("stats", ()), root, name, set(files) | skip)
    if stats:  # only then: keys of discoveries that asked nothing stay as they were
        out["stats"] = stats
    owners = _owners(reads, name, out, {name(p) for p in flyte_config_candidates(root)})
    if owners is not None:
        out["owners"] = owners
    return out


def _stat_witnesses(paths, root: Path, name, known: set[str]) -> dict:
    """{name: what is there} for the paths asked about, less those witnessed by
    content already, the root and its parents (their names would hold the
    checkout's path, and an import-time test of them decides nothing here)."""
    root_s = str(root).rstrip("/") + "/"
    out = {}
    for p in paths:
        if root_s.startswith(p.rstrip("/") + "/"):
            continue
        n = name(p)
        if n not in known:
            out[n] = _kind(p)
    return out


def _kind(path: str) -> str | None:
    """"file", "dir" or "other" (following symlinks), None when missing or unreadable."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"


def _owners(reads: dict, name, w: dict, candidates: set[str]) -> dict | None:
    """{module: {kind: [witness name]}}: the witnesses only that module's load read
    (see ReadRecorder); what was also read outside any module body, and flyte's
    config candidates, belong to every environment and to no module."""
    got, unowned = reads.get("owners"), reads.get("unowned")
    if not isinstance(got, dict) or not isinstance(unowned, dict):
        return None  # a child that did not charge its reads: one witness for all
    nm = {"files": name, "dirs": name, "environ": lambda v: v}
    common = {k: {nm[k](p) for p in unowned.get(k, ())} for k in KINDS}
    common["files"] |= candidates
    out = {}
    for owner, kinds in sorted(got.items()):
        mine = {k: sorted(({nm[k](p) for p in kinds.get(k, ())} - common[k]) & set(w[k])) for k in KINDS}
        mine = {k: v for k, v in mine.items() if v}
        if mine:
            out[name(owner)] = mine
    return out


def witness_for(reads: dict, files) -> str | None:
    """The key of the witnesses an environment whose import closure is `files`
    (names relative to the root) depends on: all but those only modules outside
    the closure read. None when `reads` charges nothing to modules."""
    try:
        owners = reads["owners"]
        inside: dict[str, set] = {k: set() for k in KINDS}
        outside: dict[str, set] = {k: set() for k in KINDS}
        wanted = set(files)
        for mod, kinds in owners.items():
            for k in KINDS:
                (inside if mod in wanted else outside)[k].update(kinds.get(k, ()))
        drop = {k: outside[k] - inside[k] for k in KINDS}
        # nothing dropped: the whole witness's key (without `owners`), as before owners were kept
        return key_of({k: ({n: v for n, v in v_.items() if n not in drop[k]} if k in KINDS else v_)
                       for k, v_ in reads.items() if k != "owners"})
    except (KeyError, AttributeError, TypeError):
        return None


def _namer(root: Path):
    root_s = str(root).rstrip("/") + "/"
    home_s = os.path.expanduser("~").rstrip("/") + "/"
    top = git_top(root)
    top_s = str(top).rstrip("/") + "/" if top is not None and top != root else None
    per_user = {os.path.join(home_s, d, "config.yaml") for d in (".flyte", ".union")}

    def name(p: str) -> str:
        if p.startswith(root_s):
            return p[len(root_s):]
        if top_s and p.startswith(top_s) and p not in per_user:
            return Path(os.path.relpath(p, root)).as_posix()
        # `~/.flyte/config.yaml`, not this user's home
        return "~/" + p[len(home_s):] if home_s != "/" and p.startswith(home_s) else p

    return name


def git_top(root: Path) -> Path | None:
    """The nearest directory at or above `root` holding `.git` (a directory, or a worktree's file)."""
    for d in (root, *root.parents):
        if (d / ".git").exists():
            return d
    return None


def shared_names_why_not(recorded, root: Path) -> str | None:
    """Why witnesses from (or for) the shared cache cannot be checked safely here,
    or None. A shared document is untrusted: before anything is opened, every
    file or directory it names must be a plain relative path whose real path is
    inside the root, or one of flyte's config files this reader witnesses
    itself (`flyte_config_candidates`); values must be 64 hex or null."""
    if not (isinstance(recorded, dict) and set(recorded) <= {*KINDS, "owners"}
            and all(isinstance(g, dict) for g in recorded.values())):
        return "malformed witnesses"
    if not _owners_well_formed(recorded):
        return "malformed owners of witnesses"
    name = _namer(root)
    own = {name(p) for p in flyte_config_candidates(root)}
    real_root = os.path.realpath(root)
    for group, names in recorded.items():
        if group == "owners":
            continue
        for n, v in names.items():
            if not (isinstance(n, str) and (v is None or (isinstance(v, str) and _HEX64.fullmatch(v)))):
                return f"malformed {group} witness"
            if group == "environ" or (group == "files" and n in own):
                continue
            if not plain_inside(n, real_root):
                return f"witness {n[:200]!r} is not a path inside the project root"
    return None


def _owners_well_formed(recorded: dict) -> bool:
    """`owners` only partitions names the witnesses already hold: module -> kind -> [name]."""
    for mod, kinds in (recorded.get("owners") or {}).items():
        if not (isinstance(mod, str) and isinstance(kinds, dict) and set(kinds) <= set(KINDS)):
            return False
        for k, names in kinds.items():
            if not (isinstance(names, list) and all(isinstance(n, str) and n in recorded.get(k, {}) for n in names)):
                return False
    return True


def plain_inside(rel: str, real_root: str) -> bool:
    if not rel or rel.startswith(("/", "~")) or "\\" in rel or "\0" in rel:
        return False
    if any(p in ("", ".", "..") for p in rel.split("/")):
        return False
    # no symlink in the repository leads the read elsewhere
    return os.path.realpath(os.path.join(real_root, rel)).startswith(real_root.rstrip("/") + "/")


def outside_tree(recorded: dict) -> dict:
    """The witnesses a revision's commit does not decide: variables and files
    named outside the root (`../`, `~/`, absolute). A revision's own files are
    its commit's, whatever the work tree holds now."""
    def out(group: str) -> dict:
        return {n: v for n, v in (recorded.get(group) or {}).items() if n.startswith(("/", "~/", "../"))}

    return {"files": out("files"), "dirs": out("dirs"), "environ": dict(recorded.get("environ") or {})}


def witness_path(name: str, root) -> str:
    """The path a witness name stands for: relative to the root (`../` for its
    parents), `~/` to the home directory."""
    if name.startswith("~/"):
        return os.path.join(os.path.expanduser("~"), name[2:])
    return name if os.path.isabs(name) else os.path.normpath(os.path.join(str(root), name))


def still_valid(recorded: dict, root: Path, digests) -> bool:
    """True while every recorded witness has the value it had (False for a
    record of another shape)."""
    if not recorded:
        return True
    try:
        return _still_valid(recorded, root, digests)
    except (AttributeError, TypeError, ValueError):
        return False


def _still_valid(recorded: dict, root: Path, digests) -> bool:
    for n, hex_ in recorded.get("files", {}).items():
        if _file_digest(witness_path(n, root), digests) != hex_:
            return False
    for n, listing in recorded.get("dirs", {}).items():
        if _listing(witness_path(n, root)) != listing:
            return False
    for n, kind in recorded.get("stats", {}).items():
        if _kind(witness_path(n, root)) != kind:
            return False
    return all(env_value(n) == v for n, v in recorded.get("environ", {}).items())


