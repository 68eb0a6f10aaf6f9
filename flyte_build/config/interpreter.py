"""The project's interpreter: the Python that imports the user's modules.

flyte-build may be installed on its own (pipx, `uv tool`, a CI image, hatch's
build environment) while the project's dependencies live in the project's
own virtualenv. Everything that imports user code (discovery, task
serialization) therefore runs in the project's Python, chosen in this order:

1. `--python PATH` / config `python = "..."` (relative to the project's directory);
2. `$VIRTUAL_ENV` (an activated virtualenv);
3. a `.venv` beside the project's pyproject.toml or in a parent, up to the git
   root (uv's and poetry's in-project convention);
4. the interpreter running flyte-build.

Its Python and flyte versions key discovery and the specs (the flyte that
serializes is the one `check:` compares), so two interpreters never share an
entry; so do the distributions installed where it imports from (`installed`):
the modules may read any of them at import, and `pip install -U` in the
project's venv must not leave an older discovery in use. Asking an
interpreter costs a process start (~50 ms), so the answer is kept on disk
under the stat of the interpreter and of its flyte's dist-info directory: a
no-op run starts no process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UserError

FORMAT = 2  # 2: the directories its distributions are installed in
# run in the chosen interpreter: only the standard library
_PROBE = r"""
import json, os, sys
out = {"python": list(sys.version_info[:3]), "flyte": None, "marker": None, "dist": None, "site": []}
for p in sys.path:
    try:
        if p and os.path.isdir(p) and any(n.endswith((".dist-info", ".egg-info")) for n in os.listdir(p)):
            out["site"].append(os.path.abspath(p))
    except OSError:
        pass
try:
    import importlib.metadata as md, importlib.util as iu
    spec = iu.find_spec("flyte")
    if spec is not None and spec.origin:
        marker = os.path.join(os.path.dirname(spec.origin), "_version.py")
        out["marker"] = marker if os.path.isfile(marker) else spec.origin
        dist = md.distribution("flyte")
        out["flyte"] = dist.version
        out["dist"] = str(getattr(dist, "_path", "") or "") or None
except Exception:
    pass
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Interpreter:
    path: str  # absolute; the file the children are started with
    why: str  # how it was chosen, for `config` and the error messages
    python: tuple[int, ...]
    flyte: str  # its flyte's version
    flyte_marker: str  # a file whose digest changes with its flyte (flyte/_version.py)
    site: tuple[str, ...] = ()  # the directories on its sys.path holding installed distributions
    # listed afresh by each process (see `of`), never kept on disk
    distributions: tuple = ()  # per directory of `site`, its distributions' metadata names (versions in them)
    installed: tuple = ()  # those and the .pth files, with their stat signatures here (a reinstall changes them)


def choose(cfg, environ=os.environ) -> tuple[str, str]:
    """(the interpreter's path, why it was chosen); no process started."""
    project = Path(cfg.pyproject).parent if getattr(cfg, "pyproject", None) else Path(cfg.root)
    if cfg.python:
        why = getattr(cfg, "python_source", None) or "config `python`"
        return _existing(str(project / cfg.python), why), why  # (an absolute path stays as it is)
    venv = environ.get("VIRTUAL_ENV")
    if venv:
        return _existing(os.path.join(venv, "bin", "python"), "$VIRTUAL_ENV"), "$VIRTUAL_ENV"
    found = _project_venv(project)
    if found:
        return found
    return sys.executable, "the interpreter running flyte-build"


def _project_venv(project: Path) -> tuple[str, str] | None:
    for d in _up_to_git_root(project):
        candidate = d / ".venv" / "bin" / "python"
        if candidate.exists():
            return str(candidate), f"the .venv in {d}"
    return None


def _up_to_git_root(start: Path) -> list[Path]:
    dirs = []
    for d in (start, *start.parents):
        dirs.append(d)
        if (d / ".git").exists():
            return dirs
    return dirs[:1]  # no repository: only beside the pyproject.toml


def _existing(path: str, why: str) -> str:
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise UserError(f"python: {path} (from {why}) is not an executable interpreter; give --python / config "
                        "`python` the path of the project's Python (e.g. .venv/bin/python)")
    return os.path.abspath(path)


_memo: dict[tuple, Interpreter] = {}
_ahead: dict[tuple, tuple[threading.Thread, dict]] = {}  # questions under way (`ask_ahead`)


def of(cfg, memo_dir: Path | None, environ=os.environ) -> Interpreter:
    """The project's interpreter, asked once per interpreter (and per install of
    its flyte); what is installed there, listed once per process (a resident
    process's commands are forks of it: each lists again)."""
    path, why = choose(cfg, environ)
    key = (os.getpid(), path, why)
    hit = _memo.get(key)
    if hit is None:
        pending = _ahead.pop(key, None)
        if pending is not None:
            pending[0].join()
            if "error" in pending[1]:
                raise pending[1]["error"]
            hit = pending[1]["answer"]
        else:
            hit = _probe(path, why, memo_dir)
        names, stamps = installed(hit.site)
        hit = _memo[key] = replace(hit, distributions=tuple(tuple(n) for _d, n in names), installed=tuple(stamps))
    return hit


def under_way(cfg, environ=os.environ) -> bool:
    """Whether `ask_ahead` is asking the interpreter `cfg` chooses."""
    try:
        return (os.getpid(), *choose(cfg, environ)) in _ahead
    except UserError:
        return False


def ask_ahead(cfg, memo_dir: Path | None, environ=os.environ) -> bool:
    """Start asking the project's interpreter, in a thread, when no memo answers:
    its process (a Python start, ~50 ms) then runs on another core while this
    run opens its caches and walks the tree; `of` waits for the answer (or
    raises its error). Whether a question is under way."""
    try:
        path, why = choose(cfg, environ)
    except UserError:
        return False  # `of` says it
    key = (os.getpid(), path, why)
    if key in _memo or key in _ahead or _read_memo(_memo_file(path, memo_dir), path) is not None:
        return key in _ahead
    box: dict = {}

    def ask() -> None:
        try:
            box["answer"] = _probe(path, why, memo_dir)
        except BaseException as exc:  # re-raised by `of`, in the thread that needs the answer
            box["error"] = exc

    thread = threading.Thread(target=ask, name="flyte-build-interpreter", daemon=True)
    _ahead[key] = (thread, box)
    thread.start()
    return True


def missing_module_hint(python: Interpreter) -> str:
    return (f"(the modules were imported by {python.path}, chosen by {python.why}: install what is missing "
            "there, or choose the project's interpreter with --python / config `python`)")


def _stat(path: str | None) -> list | None:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns] if st else None


def _memo_file(path: str, memo_dir: Path | None) -> Path | None:
    return memo_dir / "interpreters" / f"{hashlib.sha256(path.encode()).hexdigest()[:32]}.json" if memo_dir else None


def _probe(path: str, why: str, memo_dir: Path | None) -> Interpreter:
    memo_file = _memo_file(path, memo_dir)
    got = _read_memo(memo_file, path)
    if got is None:
        got = _ask(path, why)
        got["stamp"] = [FORMAT, path, _stat(path), _stat(got["dist"]), _stat(got["marker"])]
        if memo_file is not None and got["flyte"]:
            try:
                from ..atomic import write_bytes

                memo_file.parent.mkdir(parents=True, exist_ok=True)
                write_bytes(memo_file, json.dumps(got).encode())
            except OSError:
                pass
    if not got["flyte"] or not got["marker"]:
        raise UserError(f"the project's interpreter {path} (chosen by {why}) has no flyte: install it there "
                        f"(`{path} -m pip install flyte`, or add flyte to the project's dependencies), or choose "
                        "another with --python / config `python`")
    if tuple(got["python"][:2]) < (3, 10):
        raise UserError(f"the project's interpreter {path} (chosen by {why}) is Python "
                        f"{'.'.join(map(str, got['python']))}; flyte needs 3.10 or newer: choose another with --python")
    site = tuple(p for p in got.get("site") or () if isinstance(p, str))
    return Interpreter(path, why, tuple(got["python"]), got["flyte"], got["marker"], site)


def installed(site: tuple[str, ...]) -> tuple[list, list]:
    """(per directory of `site`, the names of its distributions' metadata
    directories, which hold each one's version; per directory, those and its
    .pth and .egg-link files with their stat signatures on this machine, which
    also change when one is reinstalled at the same version). An install,
    upgrade or removal renames or replaces them."""
    names, stamps = [], []
    for d in site:
        try:
            entries = sorted(e for e in os.listdir(d) if e.endswith((".dist-info", ".egg-info", ".egg-link", ".pth")))
        except OSError:
            entries = []
        names.append([d, [e for e in entries if e.endswith((".dist-info", ".egg-info"))]])
        stamps.append([d, [[e, _stat(os.path.join(d, e))] for e in entries]])
    return names, stamps


def _read_memo(memo_file: Path | None, path: str) -> dict | None:
    try:
        got = json.loads(memo_file.read_bytes()) if memo_file else None
    except (OSError, ValueError):
        return None
    if not isinstance(got, dict) or not isinstance(got.get("stamp"), list):
        return None
    if got["stamp"] != [FORMAT, path, _stat(path), _stat(got.get("dist")), _stat(got.get("marker"))]:
        return None
    return got


def _ask(path: str, why: str) -> dict:
    from ..processes.children import user_environ

    try:
        proc = subprocess.run([path, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                              env=user_environ(), stdin=subprocess.DEVNULL)
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        if not isinstance(got, dict) or not isinstance(got.get("python"), list):
            raise ValueError(got)
        return got
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        raise UserError(f"the project's interpreter {path} (chosen by {why}) does not run Python: "
                        "choose another with --python / config `python`") from None


def for_hatch(cfg, environ=os.environ):
    """`cfg` with the project's interpreter chosen for a hatch build. hatch runs
    its builders in its own build environment (that is $VIRTUAL_ENV there), which
    holds flyte-build but not the project's dependencies; so, unless config
    `python` names one: the project's `.venv` (up to the git root), else hatch's
    own default environment of the project when it exists, else the build
    environment's interpreter."""
    if cfg.python:
        return cfg
    project = Path(cfg.pyproject).parent if getattr(cfg, "pyproject", None) else Path(cfg.root)
    venv = _project_venv(project)
    if venv:
        return replace(cfg, python=venv[0], python_source=f"{venv[1]} (hatch build)")
    found = _hatch_default_env(project, environ)
    if found:
        return replace(cfg, python=found, python_source="hatch's default environment of the project")
    return cfg


def _hatch_default_env(project: Path, environ) -> str | None:
    """The interpreter of hatch's `default` environment of the project, if it was created."""
    import shutil

    hatch = shutil.which("hatch", path=environ.get("PATH"))
    if hatch is None:
        return None
    env = {k: v for k, v in environ.items() if k not in ("VIRTUAL_ENV", "HATCH_ENV_ACTIVE")}
    try:
        proc = subprocess.run([hatch, "env", "find", "default"], cwd=project, env=env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = proc.stdout.strip().splitlines()
    python = Path(lines[-1].strip()) / "bin" / "python" if proc.returncode == 0 and lines else None
    return str(python) if python is not None and python.exists() else None
