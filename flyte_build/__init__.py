"""flyte-build: a Pants/Bazel-style build system for Flyte v2 projects.

The Python API mirrors `flyte.deploy`: `build(...)`, `plan(...)` and
`deploy(...)` return plain result objects. Imports are lazy so that the CLI's
no-op path loads as little as possible.
"""

from .__about__ import __version__

__all__ = ["__version__", "build", "plan", "deploy"]


def __getattr__(name):
    if name in ("build", "plan", "deploy"):
        from . import api

        return getattr(api, name)
    raise AttributeError(name)
