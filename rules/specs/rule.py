"""specs:<env> — the environment's tasks serialized by flyte, as TaskSpec templates.

Flyte's own serializer runs in a child process (serialize_child.py) that
imports the same modules discovery imported, in the same order, and returns
per environment flyte's image resolution and its tasks' TaskSpec templates
(with `{{version}}`-style holes a deploy fills: see
`flyte_adapter.serialization.serialize_env_templates`), or an App's. The action's inputs are
the env's import closure (its module, its tasks' modules, what discovery saw
them load and everything those import: what defines the env and its tasks),
what the modules read at import (discovery's witness), the request (the
modules imported, project, domain, copy styles, image references) and the
installed flyte: nothing of the process, the machine or the checkout path. So
an edit reaches only the specs of the envs whose code it changes, and
`affected` says so.

`specs.json` holds the env's entry: flyte's image resolution (or why it has
none) and the task templates, or an App's. The request names this env only
(its copy style, its image cache), so a setting of another env reaches only
that env's specs; the child still imports every candidate module, for the one
loaded state discovery saw.
"""

from __future__ import annotations

import json

from flyte_build.rule_api import BuildFailed, Inputs, Produced, Request, Rule, UserError, read_json

from . import serialize

VERSION = "1"
OUTPUT = "specs.json"


def inputs(env, view) -> Inputs:
    files = sorted({view.rel(p): p for p in view.closure(env)}.items())
    python = view.python  # the project's interpreter: it serializes
    return Inputs(
        files=tuple(files),
        params={
            "format": serialize.FORMAT, "python": list(python.python[:3]),
            "flyte": view.digest(python.flyte_marker)[0],
            # the installed packages the modules imported (an upgrade may change what they give)
            **({"distributions": list(view.discovery.distributions)} if view.discovery.distributions else {}),
            "request": serialize.child_request(view, env, {rel for rel, _ in files}),
            "sys_path": list(view.discovery.sys_path),
            # data files and variables the closure's modules read at import (`settings.json`, STAGE=prod)
            "witness": view.discovery.witness_for(rel for rel, _ in files),
            "env": env.name,
        },
    )


def run(req: Request) -> Produced:
    got = run_batch([req])[0]
    if isinstance(got, BuildFailed):
        raise got
    return got


def run_batch(reqs: list[Request]) -> list[Produced]:
    """One child for the envs of one run: their requests differ only in each
    env's own entries and modules, and those decide its output alone."""
    groups: dict[str, list[Request]] = {}
    for r in reqs:
        shared = {k: v for k, v in r.params["request"].items() if k not in ("copy_style", "envs", "files")}
        groups.setdefault(json.dumps(shared, sort_keys=True), []).append(r)
    out = {}
    for group in groups.values():
        request = serialize.merged([r.params["request"] for r in group])
        raw = serialize.run_child(request, group[0].root, group[0].user_code)
        if raw.get("error"):
            raise UserError(raw["error"] + _hint(raw["error"], group[0]))
        for r in group:
            out[r.target] = _produced(r, (raw.get("envs") or {}).get(r.env.name) or {})
    return [out[r.target] for r in reqs]


def _hint(error: str, req: Request) -> str:
    """Which interpreter imported the modules, when one of them was missing there."""
    if "ModuleNotFoundError" not in error or req.user_code is None:
        return ""
    return (f" (the modules were imported by {req.user_code.python}: install what is missing there, or "
            "choose the project's interpreter with --python / config `python`)")


def _produced(req: Request, own: dict) -> Produced | BuildFailed:
    """The env's specs, or why it cannot be serialized: a failure of this env
    alone (a documented refusal included), never of the run's other envs."""
    if own.get("error"):
        return BuildFailed(own["error"])
    try:
        serialize.check_tasks(req.env, own)
    except BuildFailed as exc:
        return exc
    out = req.workdir / OUTPUT
    doc = {"env": own}
    out.write_text(json.dumps(doc, sort_keys=True), encoding="utf-8")
    tasks = [t["name"] for t in own.get("tasks") or ()]
    return Produced(files=((OUTPUT, out),), meta={"tasks": tasks, "app": bool(own.get("app"))})


def read(result) -> dict:
    """A specs:<env> result's document: {"env": {"image": ..., "tasks": [...]} (or "app")}."""
    doc = read_json(result)
    if not isinstance(doc.get("env"), dict):
        raise BuildFailed(f"{result.target}: malformed specs; run the build again")
    return doc


RULE = Rule(
    kind="specs",
    version=VERSION,
    description="the environment's tasks serialized by flyte (TaskSpec templates), for checks and deploys",
    inputs=inputs,
    run=run,
    run_batch=run_batch,
    outputs=((OUTPUT,),),
    # the task specs a deploy registers: from the shared cache only when signed and verified
    needs_signature=True,
)
