"""deploy:<env> — register the environment's tasks with a Flyte backend.

Depends on the env's bundle, image and check (unless `deploy --no-check`) and
on the deploy of each env in its
`depends_on`, so the engine deploys dependencies first, independent envs in
parallel, and skips the dependents of a failed deploy. The action's effect
lives in the backend, not the cache (`cacheable=False`): `flyte_build.deployer`
remembers per endpoint, project and domain what it deployed, and skips an
env whose deploy key has not changed.
"""

from __future__ import annotations

from flyte_build.rule_api import ConfigTable, checks, Inputs, Produced, Request, Rule

VERSION = "1"


# `[tool.hatch.build.targets.flyte.deploy]`: endpoint, insecure, org, auth-type
# and ca-cert override flyte's own config file (see flyte_config.LAYERS)
CONFIG = ConfigTable(keys={
    "timeout": checks.seconds,  # each control-plane call
    "endpoint": checks.string,
    "insecure": checks.boolean,
    "org": checks.string,
    "auth-type": checks.string,
    "ca-cert": checks.string,
})

def checks(ctx) -> bool:
    """Whether deploys wait for the env's check: target (`deploy --no-check` turns it off)."""
    return (ctx.options.extra.get("deploy") or {}).get("check", True) is not False


def deps(env, ctx) -> tuple[str, ...]:
    check = (f"check:{env.name}",) if checks(ctx) else ()
    return (f"bundle:{env.name}", f"image:{env.name}", *check, *(f"deploy:{d}" for d in env.depends_on))


def inputs(env, ctx) -> Inputs:
    d = dict(ctx.options.extra.get("deploy") or {})
    return Inputs(
        params={
            "version": ctx.options.version,
            "project": ctx.cfg.project, "domain": ctx.cfg.domain,
            "endpoint": d.get("endpoint"),
            "images": dict(sorted(ctx.image_refs().items())),
            "sync_local_sys_paths": ctx.options.sync_local_sys_paths,
        },
        deps=deps(env, ctx),
    )


def run(req: Request) -> Produced:
    from . import deployer

    return deployer.run_action(req)


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
