"""The deploy goals: `plan` (the dry run) and `deploy`.

A plan is computed without contacting anything: bundles are built locally,
images are named (not built) by the image rule's `describe`, else by flyte's
own resolution, and each environment's tasks are serialized by flyte's
serializer in a child process into templates (the specs kind). Versions and
specs: `versions`.

A real deploy is the `deploy:<env>` rule run by the engine (dependencies
first, independent envs in parallel, a failed env skips its dependents); its
action is `action.run_action`.
"""

from __future__ import annotations

from dataclasses import replace

from . import failures as ahead
from .control_plane import control_plane
from .order import closure, deploy_order, deploy_waves, going_ahead
from .params import DeployParams, DeployRun
from .plan import Plan
from .preflight import check_states, checked_order, planned_image
from .versions import dry_run_bundle_uri, render_env


def plan(ws, names: list[str] | None = None, reporter=None, assume_deployed=()) -> Plan:
    """The ordered deploy plan of the selected envs (and their dependencies,
    except those in `assume_deployed`: see `split_order`), computed offline:
    bundles are built locally, images are only named."""
    ctx = ws.ctx
    order, left_out, source = checked_order(ws, names, assume_deployed)
    needed = closure(ctx, order)  # the selected envs and their dependencies: nothing else is built
    addrs = ahead.targets(ws, needed, ("specs", "bundle"), only={"bundle": set(order)})
    docs, bad, results = ahead.prerequisites(ws, addrs, reporter, build=True)
    order, not_planned, skipped = going_ahead(ctx, order, bad)
    images = ahead.planned_images(ws, docs, needed, planned_image)
    given = {"version": ctx.view.run_params(DeployParams).version, "app_source": source}
    envs = []
    checks = check_states(ws, order)
    for n in order:
        b = results.get(f"bundle:{n}")
        digest = b.digest if b else None
        imgs = dict(images)
        e = render_env(ctx.env(n), docs[n]["env"], given, digest, imgs, imgs, dry_run_bundle_uri(digest),
                     (ctx.cfg.project, ctx.cfg.domain, None))
        envs.append(replace(e, check=checks.get(n)))
    return Plan(tuple(envs), tuple(tuple(w) for w in deploy_waves(ctx, order, expand=False)),
                ctx.cfg.project, ctx.cfg.domain, tuple(ws.all_warnings()), tuple(left_out),
                tuple(not_planned), tuple(skipped))


def deploy(ws, names: list[str] | None = None, reporter=None, jobs: int | None = None, assume_deployed=()):
    """Deploy the selected envs and their dependencies in depends_on order
    (a dependency in `assume_deployed` is resolved but not deployed: see
    `split_order`). Returns the engine's results for the deploy targets, in
    deploy order, left-out dependencies included (action `unchanged`), and the ControlPlane."""
    ctx = ws.ctx
    order, left_out, source = checked_order(ws, names, assume_deployed)
    backend = control_plane(ws)
    needed = closure(ctx, order)  # the selected envs and their dependencies: nothing else is built
    # one serializer child for every env, before the parallel deploys; bundles too, each failing alone
    docs, bad, _ = ahead.prerequisites(ws, ahead.targets(ws, needed, ("specs", "bundle")), reporter, jobs)
    every = [f"deploy:{n}" for n in needed]
    order, not_planned, skipped = going_ahead(ctx, order, bad)
    planned = ahead.planned_images(ws, docs, needed, planned_image, jobs)
    # the deploy targets' declared run parameters, and the credentials their runs get
    params = DeployRun(backend.params(), planned, tuple(sorted(left_out)), source)
    engine = ws.engine(reporter, jobs, params=(params,), secrets={"deploy": backend.secrets_for_run()}, fail_alone=True)
    addresses = [f"deploy:{n}" for n in deploy_order(ctx, order)] if order else []
    results = {r.target: r for r in engine.run(addresses)} if addresses else {}
    ws.save_run_stats(list(results.values()))
    for (n, why), status in [*((f, "failed") for f in not_planned), *((k, "skipped") for k in skipped)]:
        results[f"deploy:{n}"] = ahead.NotDeployed(f"deploy:{n}", n, status, why)
    results = ahead.with_reasons(ws, results, needed, bad)
    return [results[a] for a in every if a in results], backend

