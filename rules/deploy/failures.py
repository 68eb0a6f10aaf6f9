"""A deploy's failures: one env's failure (its specs, bundle, image, check or
deploy) is its own and named with its reason, its dependents are not
deployed, the rest goes on (see order.going_ahead).

A plan and a deploy build only the selected envs and what they depend on
(order.closure): an unrelated env is neither serialized nor bundled, so
its failure is no part of the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .specs_doc import IMAGE, SPECS, specs_doc

# what a failed target of an env says of that env (the first one found is its reason)
PHRASES = {"specs": "cannot be serialized", "bundle": "cannot be bundled", "image": "has no image",
           "check": "failed its check", "deploy": "failed to deploy"}


@dataclass(frozen=True)
class NotDeployed:
    """A deploy target that never ran (its env failed, or depends on one that
    did), in the engine result's shape the summary reads."""

    target: str
    env: str
    status: str  # failed | skipped
    error: str
    ok: bool = False
    meta: dict = field(default_factory=dict)


def targets(ws, names: list[str], kinds: tuple[str, ...], only: dict | None = None) -> list[str]:
    """The `kinds` targets of the envs `names`, by env; `only`: kind -> the envs
    that need that kind (a left-out dependency's bundle is not planned)."""
    return [f"{k}:{n}" for n in names for k in kinds
            if f"{k}:{n}" in ws.graph.targets and (only is None or k not in only or n in only[k])]


def prerequisites(ws, addrs: list[str], reporter=None, jobs: int | None = None, build=False):
    """({env: its specs:<env> document}, {env: (phrase, why) it cannot go ahead},
    {target: result}) after building the targets `addrs` (see `targets`)
    only, each failing alone (an input error too); `build`: as `flyte-build
    build` does (the shared cache's manifest, --storage)."""
    if not addrs:
        return {}, {}, {}
    run = ws.build(addrs, reporter=reporter, jobs=jobs, fail_alone=True) if build else \
        ws.engine(reporter, jobs, fail_alone=True).run(addrs)
    results = {r.target: r for r in run}
    docs = {r.env: specs_doc(r) for r in results.values() if r.kind == SPECS and r.ok}
    bad: dict[str, tuple[str, str]] = {}
    for a in addrs:  # the first failure of an env is its reason
        r = results[a]
        if not r.ok and r.env not in bad:
            bad[r.env] = (PHRASES.get(r.kind, f"{r.kind} failed"), r.error or r.status)
    return docs, bad, results


def planned_images(ws, docs: dict, names: list[str], planned_image, jobs: int | None = None) -> dict:
    """Every env's planned image reference (each task's image cache names them
    all, see serialize_env_templates). The image rule names an image without
    serializing its env; an env outside `names` whose image only flyte can
    name is serialized for it, quietly: its failure is not this run's (its
    image stays unnamed, as a failed env's does)."""
    rule = ws.rules.get(IMAGE)

    def described(n: str) -> bool:
        if rule is None or rule.describe is None or f"{rule.kind}:{n}" not in ws.graph.targets:
            return False
        return bool(rule.describe(ws.ctx.env(n), ws.ctx.view).get("uri"))

    rest = [e.name for e in ws.ctx.envs if e.name not in names and not described(e.name)]
    if rest:
        docs = {**prerequisites(ws, targets(ws, rest, ("specs",)), None, jobs)[0], **docs}
    return {e.name: planned_image(ws, e.name, docs) for e in ws.ctx.envs}


def with_reasons(ws, results: dict, every: list[str], bad: dict) -> dict:
    """The deploy targets' results, each not deployed one with its env's own
    reason: skipped for a failed target of its own env (its image, its check),
    it is that env's failure; skipped for a dependency, it names the env."""
    out, phrase = dict(results), {n: p for n, (p, _) in bad.items()}
    for n in every:  # dependencies first
        a = f"deploy:{n}"
        r = out.get(a)
        if r is None or r.ok:
            continue
        if r.status == "failed":
            phrase.setdefault(n, PHRASES["deploy"])
            continue
        deps = ws.graph.edges.get(a, ())
        own = next((d for d in deps if not d.startswith("deploy:") and d in results and not results[d].ok), None)
        if own is not None:
            cause = _first_failure(ws, results, own)
            phrase[n] = PHRASES.get(cause.kind, f"{cause.kind} failed")
            out[a] = NotDeployed(a, n, "failed", f"{phrase[n]}: {cause.target} failed: {cause.error}")
            continue
        dep = next((d for d in deps if d.startswith("deploy:") and d in out and not out[d].ok), None)
        if dep is not None:
            d = dep.split(":", 1)[1]
            out[a] = NotDeployed(a, n, "skipped", f"depends on `{d}`, which {phrase.get(d, 'was not deployed')}")
            phrase.setdefault(n, "was not deployed")
    return out


def _first_failure(ws, results: dict, addr: str):
    """The failed result `addr` was skipped for (itself when it failed)."""
    r = results[addr]
    while r.status == "skipped":
        nxt = next((d for d in ws.graph.edges.get(r.target, ()) if d in results and not results[d].ok), None)
        if nxt is None:
            break
        r = results[nxt]
    return r
