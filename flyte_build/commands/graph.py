"""`flyte-build graph`: the target graph, deploy order included."""

from __future__ import annotations

import sys

from .common import emit_json, selection_options, workspace

HELP = "the target graph and deploy order (text, dot, mermaid, json)"
EXAMPLES = (
    ("flyte-build graph", "targets, their dependencies and the deploy order"),
    ("flyte-build graph --format dot | dot -Tsvg > graph.svg", "a picture (Graphviz)"),
    ("flyte-build graph --format json", "one JSON document"),
)


def add_parser(sub, parents):
    p = sub.add_parser("graph", help=HELP, description=HELP, parents=parents)
    selection_options(p)
    p.add_argument("--format", choices=["text", "dot", "mermaid", "json"], default="text")
    return p


def run(args) -> int:
    from ..render import graph_json, render_graph

    ws = workspace(args)
    if args.format == "json":
        emit_json(graph_json(ws.graph))
        return 0
    sys.stdout.write(render_graph(ws.graph, args.format) + "\n")
    return 0
