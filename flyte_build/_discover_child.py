"""Discovery's child process: import the user's modules, return plain data.

Run as `python -m flyte_build._discover_child REQUEST.json RESULT.json`. User
code runs here and only here, so whatever it prints, patches or leaves behind
dies with this process; the parent reads the result file, never our stdout.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path


def _module_name(rel: str, search_roots: list[str], root: str) -> str:
    abs_path = os.path.join(root, rel)
    best = root
    for sr in search_roots:
        if abs_path.startswith(sr.rstrip("/") + "/") and len(sr) > len(best):
            best = sr
    parts = Path(os.path.relpath(abs_path, best)).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _rel(path: str, root: str) -> str:
    p = os.path.realpath(path)
    return os.path.relpath(p, root) if p.startswith(root.rstrip("/") + "/") else p


def _user_frame(exc: BaseException, root: str) -> str:
    """file:line of the innermost frame of the user's code in the traceback."""
    where = ""
    for fs in traceback.extract_tb(exc.__traceback__):
        if os.path.realpath(fs.filename).startswith(root.rstrip("/") + "/"):
            where = f"{_rel(fs.filename, root)}:{fs.lineno}"
    return where


def main(request_path: str, result_path: str) -> int:
    req = json.loads(Path(request_path).read_text())
    root = os.path.realpath(req["root"])
    search_roots = [os.path.realpath(os.path.join(root, s)) for s in req.get("source_roots", [])]
    os.chdir(root)
    for p in reversed([root, *search_roots]):
        if p not in sys.path:
            sys.path.insert(0, p)

    from flyte_build import flyte_adapter as fa

    fa.init_for_discovery(Path(root), req.get("project"), req.get("domain"))

    failures = []
    modules: dict[str, str] = {}  # rel file -> module name
    for rel in req["files"]:
        name = _module_name(rel, search_roots, root)
        modules[rel] = name
        try:
            importlib.import_module(name)
        except SyntaxError as exc:
            loc = f"{_rel(exc.filename, root)}:{exc.lineno}" if exc.filename else rel
            failures.append({"file": rel, "message": f"{loc}: SyntaxError: {exc.msg}"})
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything, SystemExit included
            if isinstance(exc, KeyboardInterrupt):
                raise
            where = _user_frame(exc, root)
            at = f" (at {where})" if where else ""
            failures.append(
                {"file": rel, "message": f"importing module {name} failed{at}: {type(exc).__name__}: {exc}"}
            )
        if failures and not req.get("ignore_load_errors"):
            break

    # which variable names each environment object is bound to, per module
    bound: dict[int, tuple[str, str, str]] = {}  # id(env) -> (variable, module, file)
    loaded_files = set()
    for mod_name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if not f:
            continue
        real = os.path.realpath(f)
        if not real.startswith(root + "/") or "/site-packages/" in real or "/.venv/" in real:
            continue
        loaded_files.add(os.path.relpath(real, root))
        for var, val in sorted(vars(mod).items()):
            if fa.is_environment(val):
                decl = fa.declaring_file(val)
                prev = bound.get(id(val))
                here = (var, mod_name, real)
                # prefer the binding in the module that declared the environment
                if prev is None or (decl and os.path.realpath(decl) == real and prev[2] != real):
                    bound[id(val)] = here

    envs = fa.loaded_environments()
    by_name: dict[str, list] = {}
    for env in envs:
        by_name.setdefault(env.name, [])
        if all(e is not env for e in by_name[env.name]):
            by_name[env.name].append(env)
    duplicates = []
    for name, group in sorted(by_name.items()):
        if len(group) > 1:
            files = sorted({_rel(fa.declaring_file(e) or "?", root) for e in group})
            duplicates.append({"name": name, "files": files})

    # selection, as `flyte deploy` does it
    mode = req["mode"]
    selected = []
    problems = []
    if mode == "file":
        target = req["targets"][0]
        target_file = os.path.realpath(os.path.join(root, target))
        target_mod = modules.get(target)
        var = req.get("variable")
        mod = sys.modules.get(target_mod) if target_mod else None
        if mod is not None:
            if var:
                val = getattr(mod, var, None)
                if val is None or not fa.is_environment(val):
                    names = sorted(k for k, v in vars(mod).items() if fa.is_environment(v))
                    problems.append(
                        f"{target}: no TaskEnvironment named `{var}`"
                        + (f"; environments in this file: {', '.join(names)}" if names else "; the file defines none")
                    )
                else:
                    selected.append(val)
            else:
                selected = [e for e in envs if os.path.realpath(fa.declaring_file(e) or "") == target_file]
                for v in vars(mod).values():
                    if fa.is_environment(v) and all(v is not s for s in selected):
                        selected.append(v)
    else:
        prefixes = [os.path.realpath(os.path.join(root, t)).rstrip("/") + "/" for t in req["targets"]]

        def under(path: str) -> bool:
            return any(path.startswith(p) or path + "/" == p for p in prefixes)

        selected = [
            e for e in envs
            if under(os.path.realpath(fa.declaring_file(e) or "")) or (id(e) in bound and under(bound[id(e)][2]))
        ]

    chosen: list = []

    def add(env, is_selected):
        for i, (e, s) in enumerate(chosen):
            if e is env:
                if is_selected and not s:
                    chosen[i] = (e, True)
                return
        chosen.append((env, is_selected))
        for dep in env.depends_on:
            add(dep, False)

    for env in selected:
        add(env, True)

    out_envs = []
    for env, is_selected in chosen:
        var, mod_name, bound_file = bound.get(id(env), (None, "", None))
        data = fa.env_to_data(env, var, mod_name, Path(root), bound_file)
        data["selected"] = is_selected
        out_envs.append(data)

    sys_path = sorted(
        {os.path.relpath(os.path.realpath(p), root) for p in sys.path if p and os.path.realpath(p).startswith(root)}
    )
    result = {
        "envs": out_envs,
        "loaded_files": sorted(loaded_files),
        "sys_path": sys_path,
        "failures": failures,
        "duplicates": duplicates,
        "problems": problems,
        "flyte_version": fa.flyte_version(),
        "version_warning": fa.check_version(),
    }
    tmp = result_path + ".part"
    Path(tmp).write_text(json.dumps(result, sort_keys=True))
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
