"""Which files under the root may enter a bundle.

The walk applies, in order: the standard ignores (VCS and tool directories,
bytecode), every `.gitignore` and `.flyteignore` on the way down (git's
semantics, deeper files winning, through pathspec), and the secret filter.
Symlinks are resolved: one leading outside the root is skipped with a
warning, never followed; a directory symlink is not descended into (its
target, if inside the root, is walked under its real name), so loops cannot
form. Names are POSIX paths relative to the root, never absolute, never `..`.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pathspec


from ..errors import UserError

IGNORE_FILES = (".gitignore", ".flyteignore")

# Directory names never walked into (flyte's StandardIgnore, plus tool dirs).
STANDARD_IGNORED_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", "__pycache__", ".cache", ".ruff_cache", ".mypy_cache",
        ".pytest_cache", ".venv", "venv", ".idea", ".vscode", ".tox", ".nox",
        ".hypothesis", ".eggs", "node_modules", ".ipynb_checkpoints",
    }
)
STANDARD_IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp")
STANDARD_IGNORED_NAMES = frozenset({".DS_Store"})

# The patterns of flyte's StandardIgnore (flyte 2.12), matched as flyte
# matches them: `fnmatch` on the whole root-relative path, where `*` also
# matches `/`. So `build`, `dist`, `env`, `venv` and `.env` are ignored at the
# top only, while `*.log`, `*.egg-info` and `*.pyc` are ignored at any depth.
# tests/test_flyte_adapter.py checks this list against flyte's own.
FLYTE_STANDARD_IGNORES = (
    ".git", "*.pyc", "**/*.pyc", "__pycache__", "**/__pycache__", ".cache", ".cache/*", ".ruff_cache",
    "**/.ruff_cache", ".mypy_cache", "**/.mypy_cache", ".pytest_cache", "**/.pytest_cache", ".venv", "**/.venv",
    ".idea", "**/.idea", "venv", "env", "*.log", ".env", "*.egg-info", "**/*.egg-info", "*.egg", "dist", "build",
    "*.whl",
)
_FLYTE_STANDARD_RE = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in FLYTE_STANDARD_IGNORES))


def flyte_standard_ignored(rel: str) -> bool:
    return _FLYTE_STANDARD_RE.match(rel) is not None


def git_root(root: Path) -> Path | None:
    import shutil
    import subprocess

    if shutil.which("git") is None:
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.decode("utf-8", "replace").strip()) if out.returncode == 0 else None


def git_ignored(root: Path) -> tuple[frozenset[str], tuple[str, ...]] | None:
    """The untracked files under `root` that git ignores, as flyte's GitIgnore
    finds them (None outside a git repository, where flyte applies no
    .gitignore): `git ls-files -io` in the root with every ignore file as an
    `--exclude-from` (the enclosing repository's top-level ones, the root's,
    then every one below the root), so the `.gitignore` of the enclosing
    repository applies when the root is a subfolder of it. Tracked files are
    never in the list (git does not ignore what it tracks). Returns the
    ignored names (relative to the root) and the ignore files read."""
    import subprocess

    top = git_root(root)
    if top is None:
        return None
    found: list[Path] = []
    for name in (".gitignore", ".flyteignore"):
        for base in ((top,) if os.path.realpath(top) != os.path.realpath(root) else ()) + (root,):
            p = Path(base) / name
            if p.is_file() and p not in found:
                found.append(p)
    pruned = {p for p in FLYTE_STANDARD_IGNORES if "/" not in p and "*" not in p}
    for dirpath, dirnames, filenames in os.walk(root, topdown=True):
        dirnames[:] = [d for d in dirnames if d not in pruned]
        for f in filenames:
            if f in (".gitignore", ".flyteignore"):
                p = Path(dirpath) / f
                if p not in found:
                    found.append(p)
    args = ["git", "ls-files", "-io", *(f"--exclude-from={p.absolute()}" for p in found)]
    try:
        out = subprocess.run(args, cwd=root, capture_output=True, check=False, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    names = frozenset(n for n in out.stdout.decode("utf-8", "surrogateescape").split("\n") if n)
    index = Path(top) / ".git" / "index"
    if index.is_file():
        found_for_key = [*found, index]  # what git tracks decides too: a `git add` changes the verdict
    else:
        found_for_key = list(found)
    rels = []
    for p in found_for_key:
        try:
            rels.append(p.resolve().relative_to(Path(root).resolve()).as_posix())
        except ValueError:
            rels.append(str(p))
    return names, tuple(rels)


# Secret-looking files: left out by default, with a warning (see `allow_secrets`).
# File names, matched against the last path component:
SECRET_PATTERNS = (
    ".env", ".env.*", "*.env", ".envrc", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.ppk",
    "*.p8", "*.keytab", "*.ovpn", "*.asc", "*.gpg", "*.kdbx", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
    ".netrc", "_netrc", ".pgpass", ".my.cnf", ".git-credentials", ".pypirc", ".npmrc", ".htpasswd",
    ".vault-token", ".s3cfg", ".boto", ".dockercfg", ".dockerconfigjson", "kubeconfig", "*.kubeconfig",
    ".terraformrc", "terraform.rc", ".databrickscfg",
    # a remote cache's bearer token or API key, as a REAPI cache's token-file holds it
    "*.token", "*.apikey", "*.api-key",
    "credentials", "credentials.json", "credentials.toml", "credentials.db", "access_tokens.db", "adc.json",
    "application_default_credentials.json", "*service-account*.json", "*sa-key*.json", "*-key.json", "*_key.json",
    "key.json", "*-firebase-adminsdk-*.json", "client_secret*.json",
    "terraform.tfstate", "*.tfstate", "*.tfstate.backup", "*.tfvars", "*.tfvars.json",
    "secrets.yaml", "secrets.yml", "secrets.toml", "secrets.json", "secrets.env",
    "secret.yaml", "secret.yml", "secret.toml", "secret.json",
)
# Files whose directory says what they are (a tool's config that holds tokens),
# matched against the path's tail:
SECRET_PATH_PATTERNS = (
    ".kube/config", ".docker/config.json", ".aws/config", ".aws/credentials", ".config/gcloud/*",
    "gcloud/legacy_credentials/*", ".azure/*", ".ssh/*", ".gnupg/*",
    ".m2/settings.xml", ".m2/settings-security.xml", ".config/gh/hosts.yml", ".config/hub",
    ".config/containers/auth.json", ".config/rclone/rclone.conf",
)
# Templates and examples of the above are meant to be shared.
NOT_SECRET = frozenset({".env.example", ".env.sample", ".env.template", ".env.dist", "example.env", "sample.env"})


# one compiled alternation each: the walk asks these of every file
_SECRET_RE = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in SECRET_PATTERNS))
_SECRET_PATH_RE = re.compile("|".join(f"(?:(?:.*/)?{fnmatch.translate(p)})" for p in SECRET_PATH_PATTERNS))


def is_secret(name: str) -> bool:
    """Whether a root-relative POSIX name looks like a secret."""
    base = name.rsplit("/", 1)[-1]
    if base in NOT_SECRET:
        return False
    return _SECRET_RE.match(base) is not None or _SECRET_PATH_RE.match(name) is not None


def secret_reason(rel: str, path: str, root: Path, allow: tuple[str, ...]) -> str | None:
    """Why `rel` (at `path`) is left out as a secret, or None. A symlink is judged
    by its target too: `notes.txt -> .env` ships `.env`'s bytes."""
    names = [rel]
    if os.path.islink(path):
        target = os.path.realpath(path)
        r = str(root).rstrip("/") + "/"
        names.append(target[len(r):] if target.startswith(r) else target)
    for name in names:
        if is_secret(name) and not any(_allowed(n, allow) for n in names):
            via = "" if name == rel else f" (a symlink to {name})"
            return f"{rel}{via}: looks like a secret; left out (allow it with `allow-secrets`)"
    return None


def drop_secrets(files: dict[str, str], root: Path, allow: tuple[str, ...] = ()) -> tuple[dict[str, str], list[str]]:
    """`files` (name -> path) less secret-looking ones and symlinks leading out of
    `root`, with a warning for each: for file sets not made by `walk` (a
    `from_dockerfile` build context)."""
    root = Path(os.path.realpath(root))
    kept, warnings = {}, []
    for rel, path in files.items():
        if os.path.islink(path) and not inside(root, path):
            warnings.append(f"{rel}: symlink leads outside the root (to {os.path.realpath(path)}); skipped")
            continue
        why = secret_reason(rel, path, root, allow)
        if why:
            warnings.append(why)
            continue
        kept[rel] = path
    return kept, warnings


@dataclass(frozen=True)
class FileSet:
    """Files selected under a root: relative POSIX name -> absolute path."""

    root: Path
    files: dict[str, str]
    warnings: tuple[str, ...] = ()
    ignore_files: tuple[str, ...] = ()  # the .gitignore/.flyteignore files that shaped it


@dataclass
class _Ignores:
    specs: list[tuple[str, "pathspec.GitIgnoreSpec"]] = field(default_factory=list)

    def ignored(self, rel: str, is_dir: bool) -> bool:
        verdict = None
        probe = rel + "/" if is_dir else rel
        for base, spec in self.specs:
            if base:
                if not probe.startswith(base + "/"):
                    continue
                sub = probe[len(base) + 1 :]
            else:
                sub = probe
            r = spec.check_file(sub)
            if r.include is not None:
                verdict = r.include
        return bool(verdict)


def _load_spec(path: str) -> "pathspec.GitIgnoreSpec | None":
    import pathspec  # only when there is an ignore file to read

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except Exception:  # pathspec's pattern errors (e.g. a line ending in a lone backslash)
        for n, line in enumerate(lines, 1):
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except Exception as exc:
                raise UserError(f"{path}:{n}: invalid ignore pattern {line!r} ({exc})") from None
        raise


def joiner(root: Path):
    """A function giving str(root / rel) for a relative name: a string join for
    the normalised names discovery records (a Path per name showed in every
    run's profile at 5,000 files), Path's own join for any other."""
    prefix = str(root).rstrip("/") + "/"

    def join(rel: str) -> str:
        if rel != "." and not rel.startswith("/") and os.path.normpath(rel) == rel:
            return prefix + rel
        return str(root / rel)

    return join


def inside(root: Path, path: str, real: str | None = None) -> bool:
    """Whether `path` (or `real`, its realpath when the caller has it) is under `root`."""
    real = os.path.realpath(path) if real is None else real
    r = str(root)
    return real == r or real.startswith(r.rstrip("/") + "/")


def walk(
    root: Path,
    start: str = "",
    allow_secrets: tuple[str, ...] = (),
    suffixes: tuple[str, ...] | None = None,
    dir_mtimes: dict[str, int] | None = None,
    flyte_semantics: bool = False,
) -> FileSet:
    """Every selectable file under `root/start` (the ignore files above `start` apply too).

    `suffixes` keeps only names with those endings (discovery walks `.py` only).
    `dir_mtimes`, when given, receives the mtime of every directory listed: a
    file added, removed or renamed changes its directory's mtime, so a caller
    can later tell that the walk would give the same names without walking.

    `flyte_semantics` (copy style `all`) ignores what `flyte deploy` ignores,
    file for file: flyte's standard patterns as flyte matches them, and, in
    a git repository, git's own verdict on untracked files (see `git_ignored`)
    instead of our reading of the `.gitignore` files; `.flyteignore` files
    apply as always. Outside a git repository flyte applies no `.gitignore`;
    we still do (a difference BUILD.md gives: shipping what the user asked to
    ignore is never the safer mistake).
    """
    root = Path(os.path.realpath(root))
    git = git_ignored(root) if flyte_semantics else None
    ignore_names = (".flyteignore",) if git is not None else IGNORE_FILES
    ignores = _Ignores()
    ignore_files: list[str] = []
    _ignores_above(root, start, ignore_names, ignores, ignore_files)
    w = _Walk(root, ignores, suffixes, allow_secrets, flyte_semantics, git[0] if git is not None else frozenset(), [])
    files: dict[str, str] = {}
    stack = [start.strip("/")]
    while stack:
        rel_dir = stack.pop()
        if isinstance(rel_dir, _PopMarker):
            del ignores.specs[-rel_dir.count :]
            continue
        abs_dir = os.path.join(root, rel_dir) if rel_dir else str(root)
        try:
            if dir_mtimes is not None:
                dir_mtimes[rel_dir] = os.stat(abs_dir).st_mtime_ns
            entries = sorted(os.scandir(abs_dir), key=lambda e: e.name)
        except OSError as exc:
            w.warnings.append(f"{rel_dir or '.'}: cannot list directory ({exc.strerror})")
            continue
        pushed = _push_ignores(abs_dir, rel_dir, {e.name for e in entries}, ignore_names, ignores, ignore_files)
        subdirs = _walk_entries(w, rel_dir, entries, files)
        # depth-first in sorted order; ignore specs of this dir apply to its subtree only
        if pushed:
            stack.append(_PopMarker(pushed))  # type: ignore[arg-type]
        stack.extend(reversed(subdirs))
    if git is not None:
        ignore_files.extend(f for f in git[1] if f not in ignore_files)
    return FileSet(root=root, files=dict(sorted(files.items())), warnings=tuple(w.warnings), ignore_files=tuple(sorted(ignore_files)))


@dataclass(frozen=True)
class _Walk:
    """What decides, during one walk, whether an entry is kept."""

    root: Path
    ignores: "_Ignores"  # the specs in force (pushed and popped as the walk goes)
    suffixes: tuple[str, ...] | None
    allow_secrets: tuple[str, ...]
    flyte_semantics: bool
    git_names: frozenset  # git's ignored files (flyte semantics in a repository)
    warnings: list[str]


def _ignores_above(root: Path, start: str, ignore_names: tuple[str, ...], ignores: "_Ignores", ignore_files: list[str]) -> None:
    """The ignore files in the directories from the root down to `start`."""
    parts = [p for p in start.split("/") if p] if start else []
    for i in range(len(parts)):
        base = "/".join(parts[:i])
        for name in ignore_names:
            spec_path = os.path.join(root, base, name)
            if os.path.isfile(spec_path):
                spec = _load_spec(spec_path)
                if spec is not None:
                    ignores.specs.append((base, spec))
                    ignore_files.append(f"{base}/{name}" if base else name)


def _push_ignores(abs_dir: str, rel_dir: str, names: set[str], ignore_names: tuple[str, ...], ignores: "_Ignores",
                  ignore_files: list[str]) -> int:
    """Push the directory's own ignore specs; how many were pushed."""
    pushed = 0
    for name in ignore_names:
        if name in names:
            spec = _load_spec(os.path.join(abs_dir, name))
            if spec is not None:
                ignores.specs.append((rel_dir, spec))
                pushed += 1
                ignore_files.append(f"{rel_dir}/{name}" if rel_dir else name)
    return pushed


def _walk_entries(w: _Walk, rel_dir: str, entries: list, files: dict[str, str]) -> list[str]:
    """Add the directory's kept files to `files`; its kept subdirectories."""
    subdirs = []
    for e in entries:
        rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
        try:
            is_link = e.is_symlink()
            is_dir = e.is_dir(follow_symlinks=False)
        except OSError:
            continue
        if is_dir:
            if e.name in STANDARD_IGNORED_DIRS or w.ignores.ignored(rel, True):
                continue
            if w.flyte_semantics and flyte_standard_ignored(rel):
                continue
            subdirs.append(rel)
            continue
        if _file_kept(w, e, rel, is_link):
            files[rel] = e.path
    return subdirs


def _file_kept(w: _Walk, e, rel: str, is_link: bool) -> bool:
    if e.name in STANDARD_IGNORED_NAMES or e.name.endswith(STANDARD_IGNORED_SUFFIXES):
        return False
    if w.suffixes is not None and not e.name.endswith(w.suffixes):
        return False
    if w.ignores.ignored(rel, False):
        return False
    if is_link:
        target = os.path.realpath(e.path)
        if not inside(w.root, e.path):
            w.warnings.append(f"{rel}: symlink leads outside the root (to {target}); skipped")
            return False
        if os.path.isdir(target):
            return False  # walked under its real name; never followed (no loops)
        if not os.path.isfile(target):
            w.warnings.append(f"{rel}: dangling symlink; skipped")
            return False
    elif not e.is_file(follow_symlinks=False):
        return False  # sockets, fifos, devices
    _check_name(rel)
    why = secret_reason(rel, e.path, w.root, w.allow_secrets) if (is_link or is_secret(rel)) else None
    if why:
        w.warnings.append(why)
        return False
    return not (w.flyte_semantics and (flyte_standard_ignored(rel) or rel in w.git_names))


def _check_name(rel: str) -> None:
    """A name the archives cannot carry is bad input, not a file to drop silently."""
    if "\\" in rel:
        # a backslash is a path separator to Windows and to tar readers there:
        # archives refuse such names, so say which file and what to do
        raise UserError(f"{rel}: a backslash in a file name cannot be shipped; rename it, or list it in .flyteignore to leave it out")
    if not _utf8(rel):
        # keys and archive names are UTF-8; a name that is not cannot be
        # shipped faithfully, and dropping it silently would lose a file
        shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise UserError(f"{shown}: file name is not valid UTF-8; rename it, or list it in .flyteignore to leave it out")


class _PopMarker(str):
    def __new__(cls, count: int):
        obj = super().__new__(cls, "")
        obj.count = count
        return obj


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _allowed(rel: str, allow: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, pat) or rel == pat for pat in allow)
