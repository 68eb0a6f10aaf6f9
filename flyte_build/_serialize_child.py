"""Task serialization's child process: import the user's modules, serialize tasks.

Run as `python -m flyte_build._serialize_child REQUEST.json RESULT.json`.
Like discovery, user code runs only here. For each requested environment it
returns flyte's own image resolution and its tasks' TaskSpec templates (see
`flyte_adapter.serialize_env_templates`), as JSON.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path

from flyte_build import atomic


def main(request_path: str, result_path: str) -> int:
    req = json.loads(Path(request_path).read_text())
    root = os.path.realpath(req["root"])
    os.chdir(root)
    for p in reversed([root, *(os.path.realpath(os.path.join(root, s)) for s in req.get("source_roots", []))]):
        if p not in sys.path:
            sys.path.insert(0, p)

    from flyte_build import flyte_adapter as fa

    fa.init_for_discovery(Path(root), req.get("project"), req.get("domain"))
    result: dict = {"envs": {}, "error": None}
    try:
        for mod in req["modules"]:
            importlib.import_module(mod)
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything
        if isinstance(exc, KeyboardInterrupt):
            raise
        result["error"] = f"importing the environments' modules failed: {type(exc).__name__}: {exc}"
    if result["error"] is None:
        envs = {e.name: e for e in fa.loaded_environments()}
        for name, want in sorted(req["envs"].items()):
            env = envs.get(name)
            if env is None:
                result["envs"][name] = {"error": f"environment `{name}` was not found when its modules were imported again"}
                continue
            out: dict = {}
            try:
                out["image"] = fa.resolve_image_uri(env, req.get("image_refs", {}))
            except Exception as exc:  # noqa: BLE001 - reported per env, as the user's problem
                out["image"], out["image_error"] = None, str(exc)
            try:
                if fa.is_app(env):
                    out["tasks"] = []
                    out["app"] = fa.serialize_app_template(
                        env, Path(root), want["image_envs"], want["with_bundle"], req.get("sync_local_sys_paths", True))
                else:
                    out["tasks"] = fa.serialize_env_templates(
                        env, Path(root), req.get("project"), req.get("domain"), req.get("org"),
                        want["image_envs"], want["with_bundle"], req.get("sync_local_sys_paths", True),
                    )
            except fa.NotSupported as exc:  # names the env and the way out
                out["error"] = str(exc)
            except Exception as exc:  # noqa: BLE001
                out["error"] = f"serializing the tasks of `{name}` failed: {type(exc).__name__}: {exc}"
                out["traceback"] = traceback.format_exc()
            result["envs"][name] = out
    # all or nothing: the parent takes a missing result file for a crash
    atomic.write_bytes(result_path, json.dumps(result, sort_keys=True).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
