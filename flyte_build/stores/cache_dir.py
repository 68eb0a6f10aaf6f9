"""Where the local cache lives; `os` alone, so the no-op snapshot (see
`snapshot`) finds it without importing pathlib."""

from __future__ import annotations

import os


def default_cache_path() -> str:
    env = os.environ.get("FLYTE_BUILD_CACHE_DIR")
    if env:
        return os.path.expanduser(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(os.path.expanduser(xdg), "flyte-build")
    return os.path.join(os.path.expanduser("~"), ".cache", "flyte-build")


def default_cache_dir():
    from pathlib import Path

    return Path(default_cache_path())
