"""The target graph: one target per (rule, environment), edges from each
rule's declared dependencies, and the environments' `depends_on` edges.

Environment cycles are found here, before anything is built or deployed, and
named in order (`a → b → c → a`, each arrow meaning "depends on"), starting
from the alphabetically first environment in the cycle so the message is the
same on every run.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from .context import Context
from ..errors import UserError
from ..rule_api import Rule


@dataclass(frozen=True)
class Target:
    address: str
    kind: str
    env: str


def find_cycle(edges: dict[str, tuple[str, ...]]) -> list[str] | None:
    """The first cycle met by a depth-first search in sorted order, rotated to
    start at its smallest name, closed (last == first); None if acyclic."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(set(edges.get(n, ()))):
            if state.get(m) == 1:
                cyc = stack[stack.index(m):]
                i = cyc.index(min(cyc))
                cyc = cyc[i:] + cyc[:i]
                return cyc + [cyc[0]]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def env_edges(ctx: Context) -> dict[str, tuple[str, ...]]:
    return {e.name: tuple(dict.fromkeys(e.depends_on)) for e in ctx.envs}


def check_cycles(ctx: Context) -> None:
    cyc = find_cycle(env_edges(ctx))
    if cyc:
        raise UserError(f"depends_on cycle: {' → '.join(cyc)}")


class Graph:
    def __init__(self, ctx: Context, rules: dict[str, Rule]):
        check_cycles(ctx)
        self.ctx = ctx
        self.rules = rules
        self.targets: dict[str, Target] = {}
        for env in ctx.envs:
            for kind, rule in rules.items():
                if rule.applies(env, ctx.view):
                    addr = f"{kind}:{env.name}"
                    self.targets[addr] = Target(addr, kind, env.name)
        self.edges: dict[str, tuple[str, ...]] = {}
        for addr, t in self.targets.items():
            deps = self.rules[t.kind].deps(ctx.env(t.env), ctx.view)
            self.edges[addr] = tuple(d for d in dict.fromkeys(deps) if d in self.targets)

    def select(self, patterns: list[str], default_kinds: list[str] | None = None, exclude_kinds: tuple[str, ...] = ()) -> list[str]:
        """Addresses matching patterns such as `bundle:*`, `*:ml_training`,
        `image:ml-*`; an unmatched pattern is a usage error. A wildcard kind
        skips `exclude_kinds` (`build '*:x'` builds, it does not deploy); naming
        one of them outright is a usage error."""
        if not patterns:
            kinds = default_kinds or [k for k, r in self.rules.items() if r.default]
            return sorted(a for a, t in self.targets.items() if t.kind in kinds and self.ctx.env(t.env).selected)
        chosen: dict[str, None] = {}
        for pat in patterns:
            if ":" not in pat:
                kind = self._example_kind()
                raise UserError(f"target {pat!r}: addresses are KIND:ENV (e.g. {kind}:{self._example_env()}), patterns like {kind}:*")
            kind_pat, env_pat = pat.split(":", 1)
            if kind_pat in exclude_kinds:
                raise UserError(f"target {pat!r}: `{kind_pat}` targets are not built by this command (use `flyte-build {kind_pat}`)")
            if not any(fnmatch.fnmatchcase(k, kind_pat) for k in self.rules):
                raise UserError(f"target {pat!r}: no target kind matches {kind_pat!r}; kinds: {', '.join(sorted(self.rules))}")
            hits = [
                a for a, t in sorted(self.targets.items())
                if fnmatch.fnmatchcase(t.kind, kind_pat) and fnmatch.fnmatchcase(t.env, env_pat) and t.kind not in exclude_kinds
            ]
            if not hits:
                envs = ", ".join(sorted({t.env for t in self.targets.values()}))
                raise UserError(f"target {pat!r} matches nothing; environments: {envs}")
            chosen.update(dict.fromkeys(hits))
        return list(chosen)

    def _example_kind(self) -> str:
        return next((k for k, r in self.rules.items() if r.default), next(iter(self.rules), "KIND"))

    def _example_env(self) -> str:
        return next((t.env for t in self.targets.values()), "my-env")

    def closure(self, addresses: list[str]) -> list[str]:
        seen: dict[str, None] = {}
        todo = list(addresses)
        while todo:
            a = todo.pop()
            if a in seen:
                continue
            seen[a] = None
            todo.extend(self.edges.get(a, ()))
        return sorted(seen)
