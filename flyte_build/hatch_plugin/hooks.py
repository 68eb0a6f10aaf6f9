"""Entry point named in pyproject.toml's `[project.entry-points.hatch]`.

hatchling's plugin manager imports this module and calls each hook below, as it
does for its own built-ins (hatchling/builders/plugin/hooks.py).
"""

from __future__ import annotations

from hatchling.plugin import hookimpl

from .build_hook import FlyteBuildHook
from .builder import FlyteBuilder


@hookimpl
def hatch_register_builder():
    return FlyteBuilder


@hookimpl
def hatch_register_build_hook():
    return FlyteBuildHook
