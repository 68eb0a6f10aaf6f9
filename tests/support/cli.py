"""Run the real `flyte-build` command on a temporary copy of sample_monorepo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_monorepo"


def copy_sample(dest: Path) -> Path:
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "dist", ".venv"))
    return dest


def copy_checked(checked: dict, name: str) -> Path:
    """A copy of conftest's `checked_sample` repository beside it, to edit; its
    cache still serves it (no key depends on the checkout path)."""
    dest = checked["root"] / name
    shutil.copytree(checked["repo"], dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def flyte_build(*args: str, cwd: Path, cache: Path, env: dict | None = None, timeout: float = 300) -> Run:
    full_env = dict(os.environ, FLYTE_BUILD_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1")
    full_env.pop("FLYTE_BUILD_DEBUG", None)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "flyte_build", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def build_json(cwd: Path, cache: Path, *args: str, env: dict | None = None) -> dict:
    run = flyte_build("build", "--json", *args, cwd=cwd, cache=cache, env=env)
    assert run.rc == 0, f"build failed ({run.rc}):\n{run.out}\n{run.err}"
    return run.json()


def records(*args: str, cwd: Path, cache: Path, timeout: float = 300) -> dict[str, dict]:
    """Run a `--json` command that must succeed; its target records by address."""
    run = flyte_build(*args, cwd=cwd, cache=cache, timeout=timeout)
    assert run.rc == 0, f"flyte-build {' '.join(args)} failed ({run.rc}):\n{run.err[-3000:]}"
    return {t["target"]: t for t in run.json()["targets"]}


def digests(doc: dict) -> dict[str, str]:
    return {r["target"]: r["digest"] for r in doc["targets"]}


def age_tree(root: Path, seconds: float = 60) -> None:
    """Backdate every directory under `root` past the racy window, so the next
    runs trust directory mtimes (and keep discovery and closures between runs)."""
    import time

    old = time.time() - seconds
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        os.utime(d, (old, old))
