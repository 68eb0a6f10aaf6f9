"""`flyte-build build`: build targets (default `bundle:*`)."""

from __future__ import annotations

from pathlib import Path

from .common import emit_json, warn, workspace

HELP = "build targets (patterns like image:* or *:ml_training; default bundle:*)"


def add_parser(sub, parents):
    p = sub.add_parser("build", help=HELP, description=HELP, parents=parents)
    p.add_argument("targets", nargs="*", metavar="TARGET")
    p.add_argument("--out", metavar="DIR", help="also copy the artifacts here, named by digest")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="actions run at once (default: config, else CPUs)")
    p.add_argument("--changed-since", metavar="REV", help="only the TARGETs (default bundle:*) affected since git revision REV (see `affected`)")
    return p


def run(args) -> int:
    ws = workspace(args, jobs=args.jobs)
    if args.json:
        reporter = None  # machines read stdout; rich is not even imported
    else:
        from ..progress import RichReporter

        reporter = RichReporter()
    targets = args.targets
    if getattr(args, "changed_since", None):
        from ..affected import select_changed

        targets = select_changed(ws, args.changed_since, args.targets)
    if targets or not getattr(args, "changed_since", None):
        results = ws.build(targets, reporter=reporter, out=Path(args.out).resolve() if args.out else None, jobs=args.jobs)
    else:
        results = []  # nothing affected: nothing to build (not the default set)
    failed = any(r.status == "failed" for r in results)
    if args.json:
        emit_json({
            "targets": [r.record() for r in results],
            "warnings": ws.all_warnings(),
            "cache": ws.cache.stats.to_json(),
            "discovery": {"cached": ws.discovery.cached, "how": ws.discovery.how, "envs": [e.name for e in ws.ctx.envs]},
            "ok": not failed,
        })
    else:
        from ..progress import print_summary

        print_summary(results, ws.all_warnings())
    if args.json:
        for w in ws.all_warnings():
            warn(w)
    return 1 if failed else 0
