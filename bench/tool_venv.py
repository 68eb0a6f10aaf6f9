"""flyte-build as a user installs it (`pipx install`, `uv tool install`): a
venv of its own, without the system's site-packages, this checkout installed
into it (not editable) with its dependencies, byte-compiled as pip leaves it.

The checkout's own interpreter starts slower than such a venv's (~0.04 s
against ~0.01 s here: site-packages .pth hooks, the editable install's
finder), which a no-op through the resident process, ~0.02 s of its own,
would otherwise be measured with. Built once per bench work directory;
reinstalled (without its dependencies) when the checkout's sources changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _stamp() -> str:
    """The checkout's sources as they are now: what the venv must hold."""
    h = hashlib.sha256()
    for top in ("flyte_build", "rules", "pyproject.toml"):
        p = REPO_ROOT / top
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(REPO_ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def build(work: Path, log=print) -> Path | None:
    """The venv's `flyte-build` console script, or None (said in the log) when
    the venv cannot be built here."""
    venv = work / "tool-venv"
    script, stamp_file = venv / "bin" / "flyte-build", venv / "flyte-build-source.sha256"
    stamp = _stamp()
    if script.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return script
    try:
        if not script.exists():
            log(f"building flyte-build's tool venv in {venv} (once per work directory, about a minute)")
            _run([sys.executable, "-m", "venv", "--clear", str(venv)])
            _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(REPO_ROOT)])
        else:  # the checkout changed since: flyte-build again, its dependencies as they are
            _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(REPO_ROOT)])
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"no tool venv ({exc}); flyte-build's rows run from the checkout's interpreter")
        return None
    stamp_file.write_text(stamp)
    return script


def python(script: Path) -> Path:
    return script.parent / "python"


def _run(cmd: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
