"""`flyte-build affected --since REV`: the targets whose inputs changed since a git revision."""

from __future__ import annotations

from .common import emit_json, warn, workspace

HELP = "the targets whose inputs changed since a git revision, dependents included"
EXAMPLES = (
    ("flyte-build affected --since origin/main", "one line per affected target, with the file and why"),
    ("flyte-build affected --since HEAD~1 --json", "targets, envs and a CI matrix as JSON"),
)


def add_parser(sub, parents):
    p = sub.add_parser("affected", help=HELP, description=HELP, parents=parents)
    p.add_argument("--since", required=True, metavar="REV", help="a git revision: a branch, tag, sha, HEAD~3, origin/main...")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout (targets, envs, a CI matrix)")
    return p


def run(args) -> int:
    from ..affected.targets import affected_targets

    ws = workspace(args)
    result = affected_targets(ws, args.since)
    ws.digests.save()
    warnings = [*result.warnings, *ws.all_warnings()]
    if args.json:
        doc = result.to_json()
        doc["warnings"] = warnings
        emit_json(doc)
        for w in warnings:
            warn(w)
        return 0
    if not result.targets and not result.removed_targets:
        print(f"nothing affected since {args.since} ({len(result.changes)} changed file(s))")
    for r in result.targets:
        why = r.detail if r.reason in ("new", "error", "params-changed", "deps-changed") else (r.change or r.reason)
        via = f" via {r.via}" if r.via else ""
        print(f"{r.target}\t{r.file or '-'}\t{r.reason}{via}: {why}")
    for a in result.removed_targets:
        print(f"{a}\t-\tremoved")
    for w in warnings:
        warn(w)
    return 0
