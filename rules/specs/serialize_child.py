"""Task serialization's child process: import the user's modules, serialize tasks.

Run by path (`children.command`) with REQUEST.json RESULT.json.
Like discovery, user code runs only here. The child sets itself up as the
discovery child does and imports the same candidate modules under the same
names (`discovery.child.prepare` and `import_candidates`), so an environment
has here exactly the tasks discovery saw, wherever they are declared. For
each requested environment it returns flyte's own image resolution and its
tasks' TaskSpec templates (see `flyte_adapter.serialization.serialize_env_templates`), as JSON.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from flyte_build.rule_api import atomic, children
from flyte_build.rule_api import child_import_candidates as import_candidates
from flyte_build.rule_api import child_prepare as prepare


def main(request_path: str, result_path: str) -> int:
    req = json.loads(Path(request_path).read_text())
    root, search_roots, _ = prepare(req, read_flyte_config=False)  # as before: the request carries project and domain
    from flyte_build.rule_api import flyte_adapter as fa

    result: dict = {"envs": {}, "error": None}
    _, failures = import_candidates(req["files"], search_roots, root, bool(req.get("ignore_load_errors")),
                                    progress=req.get("progress"))
    if failures and not req.get("ignore_load_errors"):
        result["error"] = f"importing the environments' modules again failed: {failures[0]['message']}"
    # the directories a task's module may be named under: every sys.path
    # entry under the root (source roots, workspace members, the root)
    import os

    module_roots = [Path(p) for p in dict.fromkeys(os.path.realpath(p) for p in sys.path if p)
                    if p == root or p.startswith(root.rstrip("/") + "/")]
    if result["error"] is None:
        envs = {e.name: e for e in fa.loaded_environments()}
        all_names = sorted(req["envs"])
        for name, want in sorted(req["envs"].items()):
            env = envs.get(name)
            if env is None:
                result["envs"][name] = {"error": f"environment `{name}` was not found when its modules were imported again"}
                continue
            out: dict = {}
            try:
                out["image"] = fa.resolve_image_uri(env, req.get("image_refs", {}), req.get("copy_style", {}).get(name, "loaded_modules"), Path(root))
            except Exception as exc:  # noqa: BLE001 - reported per env, as the user's problem
                out["image"], out["image_error"] = None, str(exc)
            try:
                if fa.is_app(env):
                    out["tasks"] = []
                    out["app"] = fa.serialize_app_template(
                        env, Path(root), want.get("image_envs", all_names), want["with_bundle"],
                        req.get("sync_local_sys_paths", True))
                else:
                    out["tasks"] = fa.serialize_env_templates(
                        env, Path(root), req.get("project"), req.get("domain"), req.get("org"),
                        want.get("image_envs", all_names), want["with_bundle"], req.get("sync_local_sys_paths", True),
                        module_roots,
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
    try:
        code = main(sys.argv[1], sys.argv[2])
    finally:
        children.end_descendants()  # what the user's modules left running, setsid or not
    sys.exit(code)
