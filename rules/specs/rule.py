"""specs:<env> — the environment's tasks serialized by flyte, as TaskSpec templates.

Flyte's own serializer runs in a child process (serialize_child.py) that
imports the same modules discovery imported, in the same order, and returns
per environment flyte's image resolution and its tasks' TaskSpec templates
(with `{{version}}`-style holes a deploy fills: see
`flyte_adapter.serialize_env_templates`), or an App's. The action's inputs are
the env's import closure (its module, its tasks' modules, what discovery saw
them load and everything those import: what defines the env and its tasks),
what the modules read at import (discovery's witness), the request (the
modules imported, project, domain, copy styles, image references) and the
installed flyte: nothing of the process, the machine or the checkout path. So
an edit reaches only the specs of the envs whose code it changes, and
`affected` says so.

`specs.json` holds the env's entry and every env's image as flyte resolves it
(a task's image cache names them all). One child serializes every env; the
other envs' targets of the same engine run take their entry from its result
(a memo scoped to the run: files are digested once per run, so it cannot
answer for another state of the tree).
"""

from __future__ import annotations

import json
import sys
import threading

from flyte_build.errors import BuildFailed, UserError
from flyte_build.hashing import key_of
from flyte_build.rule_api import Inputs, Produced, Request, Rule

from . import serialize

VERSION = "1"
OUTPUT = "specs.json"


def inputs(env, view) -> Inputs:
    files = sorted({view.rel(p): p for p in view.closure(env)}.items())
    marker = serialize.flyte_marker()
    return Inputs(
        files=tuple(files),
        params={
            "format": serialize.FORMAT, "python": list(sys.version_info[:3]),
            "flyte": view.digest(marker)[0] if marker else None,
            "request": serialize.child_request(view),
            "sys_path": list(view.discovery.sys_path),
            # data files and variables the modules read at import (`settings.json`, STAGE=prod)
            "witness": view.discovery.witness,
            "env": env.name,
        },
    )


_memo: dict[tuple[str, str], dict] = {}
_memo_lock = threading.Lock()


def _serialized(req: Request) -> dict:
    """Every env's serialization for this run's request (one child per engine run)."""
    p = req.params
    key = (req.run_id, key_of({k: v for k, v in p.items() if k != "env"}))
    with _memo_lock:
        hit = _memo.get(key)
        if hit is None:
            raw = serialize.run_child(p["request"], req.root)
            if raw.get("error"):
                raise UserError(raw["error"])
            for old in [k for k in _memo if k[0] != req.run_id]:
                del _memo[old]  # an earlier run's: never asked again
            hit = _memo[key] = raw["envs"]
        return hit


def run(req: Request) -> Produced:
    envs = _serialized(req)
    name = req.env.name
    own = envs.get(name) or {}
    if own.get("error"):
        raise UserError(own["error"])
    serialize.check_tasks(req.env, own)
    out = req.workdir / OUTPUT
    doc = {"env": own, "images": {n: e.get("image") for n, e in sorted(envs.items())}}
    out.write_text(json.dumps(doc, sort_keys=True), encoding="utf-8")
    tasks = [t["name"] for t in own.get("tasks") or ()]
    return Produced(files=((OUTPUT, out),), meta={"tasks": tasks, "app": bool(own.get("app"))})


def read(result) -> dict:
    """A specs:<env> result's document: {"env": {...}, "images": {env: uri}}."""
    try:
        with open(result.path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, TypeError) as exc:
        raise BuildFailed(f"{result.target}: unreadable specs ({exc}); run the build again") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("env"), dict) and isinstance(doc.get("images"), dict)):
        raise BuildFailed(f"{result.target}: malformed specs; run the build again")
    return doc


RULE = Rule(
    kind="specs",
    version=VERSION,
    description="the environment's tasks serialized by flyte (TaskSpec templates), for checks and deploys",
    inputs=inputs,
    run=run,
    outputs=((OUTPUT,),),
)
