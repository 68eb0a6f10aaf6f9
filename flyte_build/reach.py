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
