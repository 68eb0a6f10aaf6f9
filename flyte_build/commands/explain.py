"""`flyte-build explain TARGET`: which inputs changed since the target's last build."""

from __future__ import annotations

from .common import emit_json, workspace

HELP = "why a target would rebuild: the inputs that changed since its last build"
EXAMPLES = (
    ("flyte-build explain bundle:ml_training", "up to date, or the inputs that changed"),
    ("flyte-build explain image:inference --json", "one JSON document"),
)


def add_parser(sub, parents):
    p = sub.add_parser("explain", help=HELP, description=HELP, parents=parents)
    p.add_argument("target", metavar="TARGET", help="a target address: bundle:ENV, image:ENV, ...")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def run(args) -> int:
    ws = workspace(args)
    (addr,) = ws.graph.select([args.target])[:1] or [args.target]
    report = ws.engine().explain(addr)
    if args.json:
        emit_json(report)
        return 0
    lines = []
    if not report["would_rebuild"]:
        lines.append(f"{addr}: up to date (cached as {report['digest']})")
    else:
        lines.append(f"{addr}: would rebuild (key {report['key'][:16]})")
    if "reason" in report:
        lines.append(f"  {report['reason']}")
    for label, key in (("changed", "changed_files"), ("added", "added_files"), ("removed", "removed_files")):
        for f in report.get(key, []):
            lines.append(f"  {label}: {f}")
    for p in report.get("changed_params", []):
        lines.append(f"  changed parameter: {p}")
    for d in report.get("changed_deps", []):
        lines.append(f"  changed dependency: {d}")
    for d in report.get("dependencies_rebuilding", []):
        lines.append(f"  dependency would rebuild: {d}")
    for o in report.get("changed_other", []):
        lines.append(f"  changed: {o}")
    print("\n".join(lines))
    return 0
