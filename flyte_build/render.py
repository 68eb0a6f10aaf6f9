"""Pictures and tables of the target graph: text, dot, mermaid, json."""

from __future__ import annotations

import json

from .engine.graph import Graph, env_edges
from .reach import dependency_order, dependency_waves


def _id(addr: str) -> str:
    return "t_" + "".join(c if c.isalnum() else "_" for c in addr)


def graph_json(g: Graph) -> dict:
    names = [e.name for e in g.ctx.envs]
    return {
        "targets": [
            {"target": a, "kind": t.kind, "env": t.env, "deps": list(g.edges[a])} for a, t in sorted(g.targets.items())
        ],
        "envs": [{"env": e.name, "kind": e.kind, "depends_on": list(e.depends_on), "selected": e.selected} for e in g.ctx.envs],
        # the envs' dependency order (a deploy's, dependencies first) and its waves
        "deploy_order": dependency_order(env_edges(g.ctx), names),
        "deploy_waves": dependency_waves(env_edges(g.ctx), names),
    }


def _named(g: Graph, env: str) -> str:
    return f"{env} (app)" if g.ctx.env(env).is_app else env


def graph_text(g: Graph) -> str:
    lines = []
    for a, t in sorted(g.targets.items()):
        deps = g.edges[a]
        lines.append(f"{a}" + (f"  <- {', '.join(deps)}" if deps else ""))
    order = dependency_order(env_edges(g.ctx), [e.name for e in g.ctx.envs])
    lines.append("")
    lines.append("deploy order: " + " → ".join(_named(g, n) for n in order))
    for i, wave in enumerate(dependency_waves(env_edges(g.ctx), order), 1):
        lines.append(f"  wave {i}: {', '.join(wave)}")
    return "\n".join(lines)


def graph_dot(g: Graph) -> str:
    out = ["digraph flyte_build {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    kinds = sorted({t.kind for t in g.targets.values()})
    colors = dict(zip(kinds, ["lightblue", "lightyellow", "lightgrey", "palegreen", "pink", "wheat"] * 3))
    for a, t in sorted(g.targets.items()):
        out.append(f'  {_id(a)} [label="{a}", style=filled, fillcolor={colors[t.kind]}];')
    for a in sorted(g.edges):
        for d in g.edges[a]:
            out.append(f"  {_id(a)} -> {_id(d)};")
    out.append("}")
    return "\n".join(out)


def graph_mermaid(g: Graph) -> str:
    out = ["graph LR"]
    for a, _t in sorted(g.targets.items()):
        out.append(f'  {_id(a)}["{a}"]')
    for a in sorted(g.edges):
        for d in g.edges[a]:
            out.append(f"  {_id(a)} --> {_id(d)}")
    return "\n".join(out)


def render_graph(g: Graph, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(graph_json(g), indent=2, sort_keys=True)
    return {"text": graph_text, "dot": graph_dot, "mermaid": graph_mermaid}[fmt](g)
