"""`flyte-build deploy`: deploy environments in depends_on order, or print the plan."""

from __future__ import annotations

from flyte_build.goal_api import emit_json, settings_from_args, verbosity, warn
from flyte_build.rule_api import UserError, as_digest, key_of

from .flags import backend_options, params_from_args

HELP = "deploy environments in depends_on order (--dry-run prints the plan offline)"
EXAMPLES = (
    ("flyte-build deploy --dry-run", "the plan: order, versions, images; contacts nothing"),
    ("flyte-build deploy deploy:inference", "one environment (and what it depends on)"),
    ("flyte-build deploy --changed-since origin/main", "only the environments a change affects"),
)
AFTER = "explain"  # its place in `flyte-build --help`


def add_parser(sub, parents):
    p = sub.add_parser("deploy", help=HELP, description=HELP, parents=parents)
    p.add_argument("args", nargs="*", metavar="TARGET|PATH [ENV_VAR]",
                   help="deploy targets (deploy:ENV, deploy:*), or a file and variable / a directory, as `flyte deploy`")
    p.add_argument("--all", action="store_true", help="every environment loaded from the file (or the directory's own .py files)")
    p.add_argument("--recursive", "-r", action="store_true", help="every environment loaded from the directory tree")
    p.add_argument("--dry-run", "--dryrun", action="store_true", help="print the plan; build nothing external, contact nothing")
    p.add_argument("--version", dest="deploy_version", metavar="V", help="the version of every task (default: a content key)")
    p.add_argument("--force", action="store_true", help="redeploy environments that are unchanged since their last deploy")
    p.add_argument("--no-check", action="store_true",
                   help="deploy without first running each env's check: target (its tasks load in its image)")
    backend_options(p)
    p.add_argument("--no-sync-local-sys-paths", action="store_true", help="do not mirror local sys.path entries into the tasks")
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="environments deployed at once")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="deadline of each call to the control plane (default: config deploy.timeout, else 60)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--changed-since", metavar="REV", help="only the environments affected since git revision REV (see `affected`)")
    return p


def _split(args) -> tuple[list[str], str | None, str | None]:
    """(target patterns, path, env var) from the positionals."""
    pos = list(args.args)
    if pos and all(":" in a for a in pos):
        for a in pos:
            if not a.split(":", 1)[0] in ("deploy", "*"):
                raise UserError(f"target {a!r}: deploy takes deploy:ENV targets (patterns like deploy:*)")
        return [f"deploy:{a.split(':', 1)[1]}" for a in pos], None, None
    if len(pos) > 2:
        raise UserError("deploy takes TARGET ... or PATH [ENV_VAR]")
    return [], (pos[0] if pos else None), (pos[1] if len(pos) > 1 else None)


def run(args) -> int:
    from flyte_build import goal_api

    from .api import deploy

    patterns, path, env_var = _split(args)
    args.path, args.env_var = path, env_var
    given = params_from_args(args, version=args.deploy_version, force=args.force, timeout=args.timeout, check=not args.no_check)
    settings = settings_from_args(args, jobs=args.jobs, sync_local_sys_paths=not args.no_sync_local_sys_paths,
                                  run_params=(given,))
    ws = goal_api.open_workspace(settings)
    unaffected: list[str] = []
    if args.changed_since:
        if path:
            raise UserError("--changed-since selects from deploy targets (deploy:*), not from a path")
        patterns, every = goal_api.changed_targets(ws, args.changed_since, patterns or ["deploy:*"])
        if not patterns:  # an empty list would mean "every environment"
            if args.json:
                emit_json({"targets": [], "deploy_order": [], "order": [], "left_out": [], "warnings": ws.all_warnings(),
                           "dry_run": bool(args.dry_run), "ok": True})
            else:
                print(f"nothing to deploy: no environment affected since {args.changed_since}")
            return 0
        # an affected env's dependency that is itself unaffected is not
        # redeployed: it must already be deployed (see api.deploy)
        touched = {ws.graph.targets[a].env for a in every if a.startswith("deploy:") and a in ws.graph.targets}
        unaffected = sorted(e.name for e in ws.ctx.envs if e.name not in touched)
    reporter = goal_api.reporter(args.json, verbosity(args))
    result = deploy(*patterns, dry_run=args.dry_run, workspace=ws, reporter=reporter, assume_deployed=unaffected)
    why = f"unaffected since {args.changed_since}" if args.changed_since else "assumed deployed"
    if args.dry_run:
        return _print_plan(result, args.json, why)
    return _print_summary(result, args.json, why)


def _print_plan(plan, as_json: bool, why: str = "") -> int:
    if as_json:
        recs = []
        for e in plan.envs:
            rec = e.record()
            rec.update(digest=as_digest(key_of(rec)), cached=False, path=None, dry_run=True)
            recs.append(rec)
        order, waves = [e.env for e in plan.envs], [list(w) for w in plan.waves]
        # deploy_order/deploy_waves as `graph --json` names them; order/waves: the old names, kept as aliases
        emit_json({"targets": recs, "deploy_order": order, "deploy_waves": waves, "order": order, "waves": waves,
                   "left_out": list(plan.left_out), "project": plan.project, "domain": plan.domain, "warnings": list(plan.warnings),
                   "failed": [{"env": n, "error": e} for n, e in plan.failed],
                   "skipped": [{"env": n, "error": e} for n, e in plan.skipped], "dry_run": True, "ok": plan.ok})
        for w in plan.warnings:
            warn(w)
        return _report_unplanned(plan)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"deploy plan (dry run): {len(plan.envs)} environments in {len(plan.waves)} waves")
    for col in ("#", "env", "version", "image", "bundle", "check", "tasks"):
        table.add_column(col, overflow="fold")
    for i, e in enumerate(plan.envs, 1):
        table.add_row(str(i), e.env, e.version, e.image or "-", (e.bundle or "-")[:19], e.check or "-",
                      f"app {e.env}" if e.app is not None else ", ".join(t.name for t in e.tasks) or "-")
    Console(emoji=False).print(table)
    if plan.left_out:
        print(f"left out, {why} (not redeployed; must already be deployed): {', '.join(plan.left_out)}")
    for w in plan.warnings:
        warn(w)
    return _report_unplanned(plan)


def _report_unplanned(plan) -> int:
    """The envs the plan could not hold, each with its reason, on stderr; exit 1 if any."""
    import sys

    for n, why in plan.failed:
        print(f"flyte-build: failed: `{n}` {why}", file=sys.stderr)
    for n, why in plan.skipped:
        print(f"flyte-build: skipped: `{n}` {why}", file=sys.stderr)
    if not plan.ok:
        print(f"planned {len(plan.envs)}, failed {len(plan.failed)}, not planned (a dependency failed) {len(plan.skipped)}",
              file=sys.stderr)
    return 0 if plan.ok else 1


def _print_summary(summary, as_json: bool, why: str = "") -> int:
    failed = bool(summary.failed or summary.skipped)
    if as_json:
        recs = [{"target": f"deploy:{e.env}", "kind": "deploy", "env": e.env, "status": e.status, "version": e.version,
                 "image": e.image, "bundle": e.bundle, "tasks": list(e.tasks), "error": e.error,
                 "digest": None, "cached": e.status == "unchanged", "path": None} for e in summary.envs]
        emit_json({"targets": recs, "endpoint": summary.endpoint, "project": summary.project, "domain": summary.domain,
                   "deployed": list(summary.deployed), "unchanged": list(summary.unchanged),
                   "failed": list(summary.failed), "skipped": list(summary.skipped), "left_out": list(summary.left_out),
                   "warnings": list(summary.warnings), "ok": not failed})
        return 1 if failed else 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"deploy to {summary.endpoint} ({summary.project}/{summary.domain})")
    for col in ("env", "status", "version", "tasks", "note"):
        table.add_column(col, overflow="fold")
    for e in summary.envs:
        note = e.error or (f"left out, {why}: not contacted" if e.env in summary.left_out else
                           "unchanged since its last deploy" if e.status == "unchanged" else "")
        table.add_row(e.env, e.status, e.version or "-", str(len(e.tasks)), note)
    Console(emoji=False).print(table)
    print(f"deployed {len(summary.deployed)}, unchanged {len(summary.unchanged)}, failed {len(summary.failed)}, "
          f"not deployed (a dependency failed) {len(summary.skipped)}")
    for w in summary.warnings:
        warn(w)
    return 1 if failed else 0
