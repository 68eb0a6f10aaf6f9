"""A freshly built wheel of this repository, and fresh virtualenvs to install it in.

Why fresh: flyte-build is a hatch plugin, and a plugin that an earlier run
left installed (in a venv, in hatch's own environments, in an installer's
cache) would hide every change to it. So each test session builds the wheel
from the working tree into a new temp directory (a path no cache has seen),
and each venv is created empty, without `--system-site-packages`.

Why uv when it is there: a real install of flyte-build pulls in flyte and
~90 other packages. `pip install` of them into an empty venv measured 61 s
here; `uv pip install` 2 s (it links from its own cache, which is keyed by
the wheel's path and mtime, so the fresh wheel is always read anew). Both
install the same wheels; pip is the fallback when uv is missing.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_wheel(dest: Path) -> Path:
    """Build this repository's wheel from the working tree into `dest`.

    hatchling is run directly (it is a dependency of flyte-build, so it is
    here): the same backend `pip wheel`/`python -m build` would call, without
    the minute an isolated build environment costs."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(dest)],
        cwd=REPO, check=True, capture_output=True, text=True,
    )
    (wheel,) = dest.glob("flyte_build-*.whl")
    return wheel


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def uv() -> str | None:
    return shutil.which("uv")


@dataclass(frozen=True)
class Venv:
    path: Path

    @property
    def bin(self) -> Path:
        return self.path / ("Scripts" if os.name == "nt" else "bin")

    @property
    def python(self) -> Path:
        return self.bin / ("python.exe" if os.name == "nt" else "python")

    def exe(self, name: str) -> str:
        return str(self.bin / name)

    def run(self, *args: str, cwd: Path | None = None, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
        """Run `args` with this venv first on PATH (as an activated venv would)."""
        full = dict(os.environ)
        for k in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "FLYTE_BUILD_DEBUG"):
            full.pop(k, None)
        full["PATH"] = f"{self.bin}{os.pathsep}{full.get('PATH', '')}"
        full.update(NO_COLOR="1", COLUMNS="200", PYTHONDONTWRITEBYTECODE="1")
        full.update(env or {})
        return subprocess.run(list(args), cwd=cwd, env=full, capture_output=True, text=True, check=check)


def create(path: Path) -> Venv:
    """An empty venv (no system site-packages) at `path`."""
    if uv():
        subprocess.run([uv(), "venv", "-q", "--python", sys.executable, str(path)], check=True, capture_output=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True)
    return Venv(path)


def install(venv: Venv, *requirements: str, editable: Path | None = None) -> None:
    """Install requirements (wheel paths or names) and optionally one editable project."""
    args = list(requirements)
    if editable is not None:
        args += ["-e", str(editable)]
    if uv():
        cmd = [uv(), "pip", "install", "-q", "--python", str(venv.python), *args]
    else:
        cmd = [str(venv.python), "-m", "pip", "install", "-q", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"install into {venv.path} failed:\n$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")


def fresh_dir(prefix: str) -> Path:
    """A new directory no earlier run used (so no installer cache keyed on the path can match)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


# -- once per test process ------------------------------------------------------
# (plain memoised functions rather than conftest fixtures so the modules that
# need them share one build without touching the shared conftest.py)

_made: list[Path] = []


def _cleanup() -> None:
    for d in _made:
        shutil.rmtree(d, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def session_wheel() -> Path:
    """This repository's wheel, built once per process into a fresh directory."""
    if not _made:
        atexit.register(_cleanup)
    d = fresh_dir("flyte-build-wheel-")
    _made.append(d)
    return build_wheel(d)


@functools.lru_cache(maxsize=None)
def wheel_venv() -> Venv:
    """A fresh venv with the session wheel and hatch (from PyPI) installed."""
    wheel = session_wheel()
    d = fresh_dir("flyte-build-venv-")
    _made.append(d)
    venv = create(d / "venv")
    install(venv, str(wheel), "hatch>=1.12")
    return venv
