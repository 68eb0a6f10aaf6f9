"""deploy:<env> — register the environment's tasks with a Flyte backend.

Depends on the env's bundle, image and check (unless `deploy --no-check`) and
on the deploy of each env in its
`depends_on`, so the engine deploys dependencies first, independent envs in
parallel, and skips the dependents of a failed deploy. The action's effect
lives in the backend, not the cache (`cacheable=False`): its action (`action.py`)
remembers per endpoint, project and domain what it deployed, and skips an
env whose deploy key has not changed.
"""

from __future__ import annotations

from flyte_build.rule_api import ConfigTable, checks, Inputs, Produced, Request, Rule

from .params import DeployParams, DeployRun

VERSION = "2"  # 2: the specs are a dependency; the backend, planned images and left-out envs are declared


# `[tool.hatch.build.targets.flyte.deploy]`: endpoint, insecure, org, auth-type
# and ca-cert override flyte's own config file (see backend_settings.LAYERS)
CONFIG = ConfigTable(keys={
    "timeout": checks.seconds,  # each control-plane call
    "endpoint": checks.string,
    "insecure": checks.boolean,
    "org": checks.string,
    "auth-type": checks.string,
    "ca-cert": checks.string,
})


def checked(view) -> bool:
    """Whether deploys wait for the env's check: target (`deploy --no-check` turns it off)."""
    return view.run_params(DeployParams).check is not False


def deps(env, view) -> tuple[str, ...]:
    check = (f"check:{env.name}",) if checked(view) else ()
    return (f"bundle:{env.name}", f"image:{env.name}", f"specs:{env.name}", *check, *(f"deploy:{d}" for d in env.depends_on))


def inputs(env, view) -> Inputs:
    """The run's settings, and what the deploy goal (`flyte-build deploy`,
    flyte_build.deploy) resolved before running the deploys: the backend (no
    credentials: those reach `run` as secrets), every env's planned image,
    whether this env is only assumed deployed, an app's source link."""
    given, goal = view.run_params(DeployParams), view.run_params(DeployRun)
    params = {
        "version": given.version,
        "project": view.cfg.project, "domain": view.cfg.domain,
        "endpoint": given.endpoint,
        "images": dict(sorted(view.image_refs().items())),
        "sync_local_sys_paths": view.sync_local_sys_paths,
    }
    if goal.backend:
        params.update(backend=dict(goal.backend), planned=dict(goal.planned), left_out=env.name in goal.left_out,
                      app_source=goal.app_source)
    return Inputs(params=params, deps=deps(env, view))


def run(req: Request) -> Produced:
    from . import action

    return action.run_action(req)


RULE = Rule(
    kind="deploy",
    version=VERSION,
    description="the environment's tasks registered with a Flyte backend (flyte-build deploy)",
    inputs=inputs,
    run=run,
    deps=deps,
    default=False,
    cacheable=False,
)
