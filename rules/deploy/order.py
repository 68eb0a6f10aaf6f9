"""The order envs deploy in: dependencies first (an env's `depends_on`), each
once, ties broken by name, and in waves that may deploy in parallel; which of
them a run deploys, leaves out (assumed deployed) or cannot go ahead with."""

from __future__ import annotations

from flyte_build.rule_api import dependency_order, dependency_waves


def env_edges(ctx) -> dict[str, tuple[str, ...]]:
    """env -> the envs it depends on."""
    return {e.name: tuple(dict.fromkeys(e.depends_on)) for e in ctx.envs}


def deploy_order(ctx, names: list[str] | None = None, expand: bool = True) -> list[str]:
    """Dependencies first, each environment once, ties broken by name.
    `expand=False`: order exactly `names` (dependencies outside them are left out)."""
    return dependency_order(env_edges(ctx), names, expand)


def deploy_waves(ctx, names: list[str], expand: bool = True) -> list[list[str]]:
    """The deploy order in waves: each wave's environments may deploy in parallel."""
    return dependency_waves(env_edges(ctx), names, expand)


def closure(ctx, order: list[str]) -> list[str]:
    """The envs of `order` and everything they depend on, in deploy order."""
    return deploy_order(ctx, order) if order else []


def going_ahead(ctx, order: list[str], bad: dict) -> tuple[list[str], list[tuple], list[tuple]]:
    """(the envs of `order` that can be planned and deployed, [(env, why)] of
    those that failed (`bad`: env -> (phrase, error)), [(env, why)] of those
    depending on one), each in deploy order. A dependency left out of `order` counts too."""
    failed, skipped, out = [], [], set()
    edges = env_edges(ctx)
    for n in deploy_order(ctx, order):  # dependencies first, so a dependency is decided first
        if n in bad:
            failed.append((n, f"{bad[n][0]}: {bad[n][1]}"))
            out.add(n)
            continue
        dep = next((d for d in sorted(edges.get(n, ())) if d in out), None)
        if dep is not None:
            skipped.append((n, f"depends on `{dep}`, which " + (bad[dep][0] if dep in bad else "is not planned")))
            out.add(n)
    return [n for n in order if n not in out], [f for f in failed if f[0] in order], [k for k in skipped if k[0] in order]


def split_order(ctx, names: list[str], assume_deployed=()) -> tuple[list[str], list[str]]:
    """(the envs to deploy, the dependencies left out), each in deploy order.

    The envs to deploy are `names` and their dependencies, dependencies first,
    each once; a dependency in `assume_deployed` (and not itself named) is left
    out: it is expected to be deployed already, so it is neither deployed nor
    contacted, but its image reference still goes into its dependents'
    versions and specs. Leaving one out never leaves out what it depends on
    unless that is in `assume_deployed` too."""
    full = deploy_order(ctx, names)
    skip = set(assume_deployed) - set(names)
    kept = [n for n in full if n not in skip]
    return deploy_order(ctx, kept, expand=False), [n for n in full if n in skip]

