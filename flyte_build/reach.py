"""The nodes a graph reaches from some starts: a file's import closure, the
modules an edit touches, a process's descendants.

Standard library only: the children that run user code import it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def reachable(starts: Iterable, edges: Mapping) -> set:
    """Every node reachable from `starts` by `edges` (node -> successors), the starts included."""
    seen = set(starts)
    todo = list(seen)
    while todo:
        for t in edges.get(todo.pop(), ()):
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def dependency_order(edges: Mapping, names: Iterable | None = None, expand: bool = True) -> list:
    """`names` (default: every node of `edges`, node -> the nodes it depends on)
    dependencies first, each once, ties broken by name; `expand`: with every
    node they reach (else exactly `names`, the edges between them kept)."""
    wanted = set(edges) if names is None else set(names)
    if expand:
        wanted = reachable(wanted, edges)
    done: set = set()
    order: list = []
    while len(order) < len(wanted):
        ready = sorted(n for n in wanted - done if all(d in done for d in edges.get(n, ()) if d in wanted))
        if not ready:
            raise ValueError("dependency cycle")  # callers check cycles first (graph.check_cycles)
        order.extend(ready)
        done.update(ready)
    return order


def dependency_waves(edges: Mapping, names: Iterable | None = None, expand: bool = True) -> list[list]:
    """`dependency_order` in waves: a node's wave follows each of its dependencies'."""
    levels: dict = {}
    for n in dependency_order(edges, names, expand):
        levels[n] = 1 + max((levels[d] for d in edges.get(n, ()) if d in levels), default=-1)
    waves: list[list] = [[] for _ in range(max(levels.values(), default=-1) + 1)]
    for n, lvl in levels.items():
        waves[lvl].append(n)
    return [sorted(w) for w in waves]
