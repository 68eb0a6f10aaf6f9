"""`flyte-build targets`: discover environments and list their targets."""

from __future__ import annotations

from .common import emit_json, selection_options, workspace

HELP = "discover environments and list their targets"
EXAMPLES = (
    ("flyte-build targets", "a table of environments and their targets"),
    ("flyte-build targets src/pipelines/train.py env", "one environment of one file"),
    ("flyte-build targets --json", "one JSON document (see BUILD.md, JSON output)"),
)

def add_parser(sub, parents):
    p = sub.add_parser("targets", help=HELP, description=HELP, parents=parents)
    selection_options(p)
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p

def records(ws) -> list[dict]:

    engine = ws.engine()
    out = []
    for addr, t in sorted(ws.graph.targets.items()):
        env = ws.ctx.env(t.env)
        rule = ws.rules[t.kind]
        rec = {"target": addr, "kind": t.kind, "env": t.env, "digest": None, "cached": False, "path": None,
               "deps": list(ws.graph.edges[addr]), "selected": env.selected}
        if rule.describe is not None:
            rec.update(rule.describe(env, ws.ctx.view))
        try:
            report = engine.explain(addr)
        except Exception:  # noqa: BLE001 - a target that cannot be keyed yet is listed without a digest
            report = None
        if report and not report["would_rebuild"]:
            entry = ws.store.get_action(report["key"])
            if entry is not None:
                rec["cached"] = True
                rec["digest"] = report["digest"]
                if entry.outputs:
                    rec["path"] = str(ws.store.blob_path(entry.outputs[0].digest))
        out.append(rec)
    return out

def run(args) -> int:
    ws = workspace(args)
    recs = records(ws)
    envs = [
        {"env": e.name, "kind": e.kind, "variable": e.variable, "file": e.file, "depends_on": list(e.depends_on),
         "tasks": [t.name for t in e.tasks], "selected": e.selected, "copy_style": ws.cfg.copy_style_for(e.name)}
        for e in ws.ctx.envs
    ]
    if args.json:
        emit_json({"targets": recs, "envs": envs, "warnings": ws.all_warnings()})
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(envs)} environments, {len(recs)} targets")
    table.add_column("env", no_wrap=True)  # a name to copy: whole, on one line
    for col in ("file", "depends on", "tasks", "targets (KIND:env)"):
        table.add_column(col, overflow="fold")
    for e in envs:
        mine = [r["kind"] for r in recs if r["env"] == e["env"]]  # the env is in the first column
        table.add_row(e["env"], f"{e['file']}:{e['variable'] or '?'}", ", ".join(e["depends_on"]) or "-",
                      "app" if e["kind"] == "app" else str(len(e["tasks"])), " ".join(mine))
    Console(emoji=False).print(table)
    for w in ws.all_warnings():
        from .common import warn

        warn(w)
    return 0
