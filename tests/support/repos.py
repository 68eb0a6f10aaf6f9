"""Throw-away Flyte repositories for the reliability suites.

Tests describe a repository as a dict of relative path -> text (or bytes),
write it under a temp dir with `make_repo`, and run the CLI with `Cli`: a
repository and a private `FLYTE_BUILD_CACHE_DIR` bound to the one runner of
tests/support/cli.py, whose `Run` carries rc/out/err and the asserts every
reliability test needs (one clean message, no traceback).
"""

from __future__ import annotations

import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.cli import Run, environ, flyte_build, popen

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


# one result type and one runner for every suite: tests/support/cli.py
Result = Run


@dataclass(frozen=True)
class Cli:
    """`flyte-build` in `cwd` with a private cache directory (tests/support/cli.py runs it)."""

    cwd: Path
    cache_dir: Path
    env: dict = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 120, drop_root_read: bool = False) -> Run:
        return flyte_build(*args, cwd=self.cwd, cache=self.cache_dir, env=self.env, timeout=timeout, drop_root_read=drop_root_read)

    def popen(self, *args: str) -> subprocess.Popen:
        return popen(*args, cwd=self.cwd, cache=self.cache_dir, env=self.env)

    def environ(self) -> dict:
        return environ(self.cache_dir, self.env)

    def build(self, *args: str) -> Run:
        return self.run("build", "--json", *args)

    def verify(self) -> Run:
        return self.run("cache", "verify", "--json")


def cache_files(cache_dir: Path) -> list[str]:
    """Every file under the cache's content and action stores (temp files included)."""
    out = []
    for sub in ("cas", "ac"):
        base = cache_dir / sub
        if base.is_dir():
            out.extend(str(p.relative_to(cache_dir)) for p in base.rglob("*") if p.is_file())
    return sorted(out)
