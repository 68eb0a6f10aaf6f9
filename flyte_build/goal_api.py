"""What a goal kind's command and Python API verbs use of the core.

A rule answers for one target and imports the core through
`flyte_build.rule_api`. A kind that also adds a goal (the deploy kind's
`flyte-build deploy`, `flyte_build.plan` and `flyte_build.deploy`) drives a
whole run: it opens a workspace from the caller's settings, builds a closure
of targets, runs its own targets on the engine with its run parameters,
reports progress and prints JSON. Those modules import the core through this
module, which sits with the front ends (it opens workspaces). What it hands
out:

- settings and workspaces: `settings_of` (from the Python API's
  keyword arguments), `settings_from_args` (from the CLI's), `open_workspace`,
  `workspace_of` (a Workspace, or Settings to open one), `env_names` (names,
  TaskEnvironment objects or `KIND:ENV` patterns as env names). A Workspace
  gives a goal `ctx` (with its read-only `view`), `graph`, `rules`,
  `build(addresses, ...)` (a closure as `flyte-build build` builds it),
  `engine(reporter, jobs, params=..., secrets=..., fail_alone=...)` (a goal's
  own targets with its typed run parameters), `flyte_ref` and `layers`
  (flyte's config file and the pyproject and flag layers over it),
  `all_warnings()` and `save_run_stats(results)`;
- the CLI's output: `reporter` (progress on stderr), `emit_json`, `warn`,
  `verbosity`;
- `changed_targets`: the targets a git change affects (as `affected`).

Heavy modules are imported when called: `flyte-build --help` imports a goal's
command module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .commands.common import emit_json, settings_from_args, verbosity, warn  # noqa: F401 (handed out)

__all__ = ["changed_targets", "emit_json", "env_names", "open_workspace", "reporter", "settings_from_args",
           "settings_of", "verbosity", "warn", "workspace_of"]

if TYPE_CHECKING:
    from .workspace import Settings, Workspace


def settings_of(**kwargs) -> "Settings":
    from .api import settings_of as of

    return of(**kwargs)


def open_workspace(settings: "Settings") -> "Workspace":
    from .workspace import Workspace

    return Workspace(settings)


def workspace_of(ws_or_settings) -> "Workspace":
    from .api import workspace_of as of

    return of(ws_or_settings)


def env_names(ws: "Workspace", envs) -> list[str] | None:
    from .api import env_names as names

    return names(ws, envs)


def reporter(quiet: bool, level: int):
    """Progress on stderr (`level`: -1 with -q, else the number of -v; see `verbosity`)."""
    from .progress import RichReporter

    return RichReporter(quiet=quiet, verbosity=level)


def changed_targets(ws: "Workspace", rev: str, patterns: list[str]) -> tuple[list[str], list[str]]:
    """(the targets of `patterns` a change since `rev` affects, every affected target)."""
    from .affected.targets import select_changed_all

    return select_changed_all(ws, rev, patterns)
