"""Running flyte's serializer: the child's request, the child, and what its answer must hold."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from flyte_build.rule_api import BuildFailed, UserError

FORMAT = 2


def child_request(view, env, closure: set[str]) -> dict:
    """What the child needs to serialize `env`: the run's settings, the modules to
    import (the candidates discovery imported that are in the env's import
    closure, in discovery's order: its module, its tasks' modules and what they
    import), and this env's copy style and image cache (every env's image)."""
    every = sorted(e.name for e in view.envs)
    mine = [c for c in view.discovery.candidates if c in closure] or list(view.discovery.candidates)
    return {
        "project": view.cfg.project, "domain": view.cfg.domain, "org": None,
        "source_roots": list(view.cfg.source_roots), "image_refs": dict(sorted(view.image_refs().items())),
        "sync_local_sys_paths": view.sync_local_sys_paths,
        # modules discovery imported, in its order: a task declared in another module
        # than its env is on the env here too (that module is in the closure)
        "files": mine, "ignore_load_errors": bool(view.cfg.ignore_load_errors),
        "copy_style": {env.name: view.cfg.copy_style_for(env.name)},
        # every env's image in every task's image cache, as flyte's merged cache
        "envs": {env.name: {"image_envs": every, "with_bundle": view.has_target(f"bundle:{env.name}")}},
    }


def merged(requests: list[dict]) -> dict:
    """One request for several envs of one run (the same settings): each env's own
    entries, and the union of their modules in discovery's (sorted) order."""
    lists = [r["files"] for r in requests]
    files = list(dict.fromkeys(f for fs in lists for f in fs))
    if all(fs == sorted(fs) for fs in lists):
        files.sort()
    return {**requests[0], "files": files,
            "copy_style": {k: v for r in requests for k, v in r["copy_style"].items()},
            "envs": {k: v for r in requests for k, v in r["envs"].items()}}


def check_tasks(env, got: dict) -> None:
    """The env serializes exactly the tasks discovery found on it: an env
    that has tasks and serializes none (or other ones) would deploy wrong."""
    names = sorted(x["name"] for x in got.get("tasks", ()))
    want = sorted(t.name for t in env.tasks)
    if want and not names:
        raise BuildFailed(f"`{env.name}` has {len(want)} tasks ({', '.join(want)}) but serialized none; nothing of it would deploy")
    if names != want:
        raise BuildFailed(f"`{env.name}`: discovery found tasks {', '.join(want) or 'none'} but serialization found "
                          f"{', '.join(names) or 'none'}")


def run_child(request: dict, root: Path, user_code) -> dict:
    """The child's result, in the project's interpreter within discovery's deadline
    (`user_code`, a rule_api.UserCode: it imports the same modules)."""
    from flyte_build.rule_api import children

    request = {**request, "root": str(root)}
    with tempfile.TemporaryDirectory(prefix="flyte-build-serialize-") as tmp:
        req_path, res_path = os.path.join(tmp, "request.json"), os.path.join(tmp, "result.json")
        request["progress"] = progress = os.path.join(tmp, "progress")
        Path(req_path).write_text(json.dumps(request))
        # by path: the rule set is not an importable package in an editable install
        child = Path(__file__).resolve().parent / "serialize_child.py"
        python, timeout = (user_code.python, user_code.timeout) if user_code else (sys.executable, 300.0)
        cmd = children.command(python, children.stage_package(tmp), str(child), req_path, res_path)
        children.run(cmd, str(root), children.child_environ(),
                     timeout, "task serialization", tmp, progress, res_path)
        return json.loads(Path(res_path).read_text())
