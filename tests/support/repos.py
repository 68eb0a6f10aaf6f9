"""Throw-away Flyte repositories and a `flyte-build` run as a real subprocess.

Tests describe a repository as a dict of relative path -> text (or bytes),
write it under a temp dir with `make_repo`, and run the CLI with `Cli`, which
pins the cache to a temp `FLYTE_BUILD_CACHE_DIR` so nothing touches the
user's own cache. Results carry rc/stdout/stderr and a few asserts every
reliability test needs (one clean message, no traceback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

PYPROJECT = """\
[project]
name = "{name}"
version = "0.1.0"

[tool.hatch.build.targets.flyte]
{extra}
"""


def env_module(name: str, var: str = "env", depends_on: tuple[str, ...] = (), imports: str = "", body: str = "") -> str:
    """A module declaring one TaskEnvironment with one task.

    `depends_on` names *variables* importable as `from <module> import <var>`
    given as "module:var" strings; they become the env's depends_on list.
    """
    lines = ["import flyte", imports]
    deps = []
    for dep in depends_on:
        mod, dvar = dep.split(":")
        lines.append(f"from {mod} import {dvar}")
        deps.append(dvar)
    dep_arg = f", depends_on=[{', '.join(deps)}]" if deps else ""
    lines.append(f"{var} = flyte.TaskEnvironment(name={name!r}{dep_arg})")
    lines.append(body)
    lines.append(
        textwrap.dedent(
            f"""
            @{var}.task
            async def {var}_task(x: int) -> int:
                return x + 1
            """
        )
    )
    return "\n".join(lines) + "\n"


def make_repo(root: Path, files: dict[str, str | bytes], pyproject_extra: str = "", name: str = "relrepo") -> Path:
    """Write `files` under `root` (plus a pyproject.toml unless given) and return `root`."""
    root.mkdir(parents=True, exist_ok=True)
    if "pyproject.toml" not in files:
        (root / "pyproject.toml").write_text(PYPROJECT.format(name=name, extra=pyproject_extra))
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return root


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    def digests(self) -> dict[str, str]:
        """target -> digest of a `build --json` run."""
        return {t["target"]: t["digest"] for t in self.json()["targets"]}

    def describe(self) -> str:
        return f"$ flyte-build {' '.join(self.args)}\nrc={self.rc}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    def assert_clean_error(self, rc: int, *pieces: str) -> None:
        """Exit `rc`, one `flyte-build: error:` naming every piece, and no traceback."""
        assert self.rc == rc, self.describe()
        assert "Traceback" not in self.stderr and "Traceback" not in self.stdout, self.describe()
        assert "internal error" not in self.stderr, self.describe()
        assert self.stderr.count("flyte-build: error:") == 1, self.describe()
        for piece in pieces:
            assert piece in self.stderr, f"{piece!r} missing\n{self.describe()}"

    def assert_ok(self) -> None:
        assert self.rc == 0, self.describe()
        assert "Traceback" not in self.stderr, self.describe()


@dataclass(frozen=True)
class Cli:
    """Runs `python -m flyte_build` in `cwd` with a private cache directory."""

    cwd: Path
    cache_dir: Path
    env: dict = field(default_factory=dict)

    def environ(self) -> dict:
        env = dict(os.environ)
        env.pop("FLYTE_BUILD_DEBUG", None)
        env.update(FLYTE_BUILD_CACHE_DIR=str(self.cache_dir), PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1", COLUMNS="200")
        env.update(self.env)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "flyte_build", *args]

    def run(self, *args: str, timeout: float = 120, drop_root_read: bool = False) -> Result:
        argv = self.argv(*args)
        if drop_root_read and os.geteuid() == 0:
            # root reads any file; drop the two capabilities that allow it so
            # a chmod 000 file is unreadable for the build as for a user
            caps = "-dac_override,-dac_read_search"
            argv = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *argv]
        proc = subprocess.run(argv, cwd=self.cwd, env=self.environ(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, errors="replace")
        return Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), cwd=self.cwd, env=self.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def build(self, *args: str) -> Result:
        return self.run("build", "--json", *args)

    def verify(self) -> Result:
        return self.run("cache", "verify", "--json")


def cache_files(cache_dir: Path) -> list[str]:
    """Every file under the cache's content and action stores (temp files included)."""
    out = []
    for sub in ("cas", "ac"):
        base = cache_dir / sub
        if base.is_dir():
            out.extend(str(p.relative_to(cache_dir)) for p in base.rglob("*") if p.is_file())
    return sorted(out)
