"""`flyte-build graph`: the target graph, deploy order included."""

from __future__ import annotations

import sys

from ..render import render_graph
from .common import selection_options, workspace

HELP = "the target graph and deploy order (text, dot, mermaid, json)"


def add_parser(sub, parents):
    p = sub.add_parser("graph", help=HELP, description=HELP, parents=parents)
    selection_options(p)
    p.add_argument("--format", choices=["text", "dot", "mermaid", "json"], default="text")
    return p


def run(args) -> int:
    ws = workspace(args)
    sys.stdout.write(render_graph(ws.graph, args.format) + "\n")
    return 0
