"""The one way tests run the `flyte-build` command, and the one way they copy sample repositories.

`flyte_build(*args, cwd=, cache=)` runs `sys.executable -m flyte_build` (never a
`flyte-build` found on PATH, which may be another install) with a private
`FLYTE_BUILD_CACHE_DIR`, and returns a `Run` (exit code, stdout, stderr).

`in_process=True` calls `flyte_build.cli.main(argv)` in this process instead, with
the same environment, working directory and captured output, and puts them back
afterwards (the logging handlers a run adds are removed too). It saves the
interpreter start and the imports (about 0.5 s a call), and discovery still runs
in its own child process. The engine's process-wide memos (digests, parsed
config, imported rule modules) do live on between in-process calls, so use it
for commands on a tree that does not change between the calls (`explain`,
`targets`, `graph` on a built copy); a test that edits files and rebuilds, kills
a build, or reads what a process leaves behind runs a real process.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_monorepo"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "dist", ".venv")


def copy_tree(src: Path, dest: Path) -> Path:
    """A copy of a repository under test (no bytecode, build output or venv), to edit freely."""
    shutil.copytree(src, dest, ignore=_IGNORE)
    return dest


def copy_sample(dest: Path) -> Path:
    return copy_tree(SAMPLE, dest)


def copy_checked(checked: dict, name: str) -> Path:
    """A copy of conftest's `checked_sample` repository beside it, to edit; its
    cache still serves it (no key depends on the checkout path)."""
    return copy_tree(checked["repo"], checked["root"] / name)


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str
    args: tuple[str, ...] = ()

    def json(self):
        return json.loads(self.out)

    def digests(self) -> dict[str, str]:
        """target -> digest of a `--json` run's target records."""
        return {t["target"]: t["digest"] for t in self.json()["targets"]}

    def describe(self) -> str:
        return f"$ flyte-build {' '.join(self.args)}\nrc={self.rc}\n--- stdout\n{self.out[-4000:]}\n--- stderr\n{self.err[-4000:]}"

    def assert_ok(self) -> Run:
        assert self.rc == 0, self.describe()
        assert "Traceback" not in self.err, self.describe()
        return self

    def assert_clean_error(self, rc: int, *pieces: str) -> None:
        """Exit `rc`, one `flyte-build: error:` naming every piece, and no traceback."""
        assert self.rc == rc, self.describe()
        assert "Traceback" not in self.err and "Traceback" not in self.out, self.describe()
        assert "internal error" not in self.err, self.describe()
        assert self.err.count("flyte-build: error:") == 1, self.describe()
        for piece in pieces:
            assert piece in self.err, f"{piece!r} missing\n{self.describe()}"


def environ(cache: Path, env: dict | None = None) -> dict:
    """The environment of a run: this one, a private cache, no debug tracebacks, plain
    output, then `env` over it (a None value unsets the variable)."""
    full = dict(os.environ)
    full.pop("FLYTE_BUILD_DEBUG", None)
    # the project's interpreter is this one unless a test says otherwise (not a venv the suite was started from)
    full.pop("VIRTUAL_ENV", None)
    full.update(FLYTE_BUILD_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1", COLUMNS="200")
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    return full


def argv(*args: str, python_flags: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *python_flags, "-m", "flyte_build", *args]


def flyte_build(*args: str, cwd: Path, cache: Path, env: dict | None = None, timeout: float = 300,
                in_process: bool = False, drop_root_read: bool = False, python_flags: tuple[str, ...] = (),
                wrapper: tuple[str, ...] = ()) -> Run:
    """Run the command; `python_flags` go to the interpreter (`-X importtime`), `wrapper`
    is a command line the run goes under (`/usr/bin/time -f ...`)."""
    if in_process:
        # what only a new interpreter can take: its hash seed, its flags, a wrapper around it
        assert not (python_flags or wrapper or drop_root_read or "PYTHONHASHSEED" in (env or {})), "run these in a process"
        return _in_process(args, cwd, environ(cache, env))
    cmd = [*wrapper, *argv(*args, python_flags=python_flags)]
    if drop_root_read and os.geteuid() == 0:
        # root reads any file; drop the two capabilities that allow it so
        # a chmod 000 file is unreadable for the build as for a user
        caps = "-dac_override,-dac_read_search"
        cmd = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *cmd]
    proc = subprocess.run(cmd, cwd=cwd, env=environ(cache, env), capture_output=True, text=True, errors="replace",
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return Run(proc.returncode, proc.stdout, proc.stderr, tuple(args))


def popen(*args: str, cwd: Path, cache: Path, env: dict | None = None) -> subprocess.Popen:
    """A run in the background (to kill, or to race another): the caller waits for it."""
    return subprocess.Popen(argv(*args), cwd=cwd, env=environ(cache, env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _in_process(args: tuple[str, ...], cwd: Path, env: dict) -> Run:
    from flyte_build import cli

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    loggers = [logging.getLogger(), *[v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)]]
    saved_handlers = {lg: list(lg.handlers) for lg in loggers}
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = ["flyte-build", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(list(args))
            except SystemExit as exc:  # argparse's usage errors and --help
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        for lg in [logging.getLogger(), *[v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)]]:
            for h in list(lg.handlers):
                if h not in saved_handlers.get(lg, ()):
                    lg.removeHandler(h)
    return Run(rc, out.getvalue(), err.getvalue(), tuple(args))


def build_json(cwd: Path, cache: Path, *args: str, env: dict | None = None, in_process: bool = False) -> dict:
    run = flyte_build("build", "--json", *args, cwd=cwd, cache=cache, env=env, in_process=in_process)
    assert run.rc == 0, f"build failed ({run.rc}):\n{run.out}\n{run.err}"
    return run.json()


def records(*args: str, cwd: Path, cache: Path, timeout: float = 300, in_process: bool = False) -> dict[str, dict]:
    """Run a `--json` command that must succeed; its target records by address."""
    run = flyte_build(*args, cwd=cwd, cache=cache, timeout=timeout, in_process=in_process)
    assert run.rc == 0, f"flyte-build {' '.join(args)} failed ({run.rc}):\n{run.err[-3000:]}"
    return {t["target"]: t for t in run.json()["targets"]}


def digests(doc: dict) -> dict[str, str]:
    return {r["target"]: r["digest"] for r in doc["targets"]}


def age_tree(root: Path, seconds: float = 60) -> None:
    """Backdate every directory under `root` past the racy window, so the next
    runs trust directory mtimes (and keep discovery and closures between runs)."""
    old = time.time() - seconds
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        os.utime(d, (old, old))
