"""What discovery's child makes of what its imports loaded: the user's modules
and files (`scan_loaded`), the environments (those of failed imports dropped,
duplicates found, the requested ones selected with their dependencies) and the
records it returns for them and for incremental discovery. Imported by the
cold child (`child`, run by path) and the warm child's forks alike.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from flyte_build.processes import children
from flyte_build.reach import reachable


def set_root(root: str) -> None:
    """The root the user's modules are imported from (`file_of_path`)."""
    global _ROOT
    _ROOT = root


def relative(path: str, root: str) -> str:
    p = os.path.realpath(path)
    return os.path.relpath(p, root) if p.startswith(root.rstrip("/") + "/") else p


_ROOT = ""


def file_of_path(path: str) -> str | None:
    """A user file under the root (relative), or None."""
    real = os.path.realpath(path)
    if not real.startswith(_ROOT + "/") or "/site-packages/" in real or "/.venv/" in real:
        return None
    return os.path.relpath(real, _ROOT)


def drop_unloaded(envs: list, failures: list[dict], made: dict, root: str, fa) -> tuple[list, list[dict]]:
    """(the environments to keep, the failures and one naming each dropped environment): with
    --ignore-load-errors, an environment whose module failed to import, or
    one of whose tasks' modules did, exists half made (its task names a module
    that is not there, remotely either); it goes, with every environment
    depending on it, each named, instead of failing later."""
    if not failures:
        return envs, failures
    failed_files = {f["file"] for f in failures}
    kept, dropped, gone = [], [], set()
    for env in envs:  # load order: an environment's dependencies were made before it
        decl = fa.declaring_file(env)
        rel = relative(decl, root) if decl else "?"
        why = f"its module {rel} failed to import" if rel in failed_files else None
        if why is None and id(env) in made:  # e.g. TaskEnvironment.from_task: declared in flyte's own file
            why = f"it was made while module {made[id(env)]} failed to import"
        for t in ([] if why or fa.is_app(env) else sorted(env.tasks.values(), key=lambda t: t.name)):
            mod = getattr(getattr(t, "func", None), "__module__", None)
            if mod and mod != "__main__" and mod not in sys.modules:
                why = f"its task {t.name} is declared in module {mod}, which failed to import"
                break
        dep = next((d for d in env.depends_on if id(d) in gone), None)
        if why is None and dep is not None:
            why = f"it depends on `{dep.name}`, which was dropped"
        if why is None:
            kept.append(env)
            continue
        gone.add(id(env))
        dropped.append({"file": rel, "message": f"environment `{env.name}` dropped: {why}"})
    return kept, failures + dropped


class _Loaded:
    """The user modules in `sys.modules` after the imports, and which variables
    each environment object is bound to."""

    def __init__(self):
        self.bound: dict[int, tuple[str, str, str]] = {}  # id(env) -> (variable, module, file)
        self.binders: dict[int, set[str]] = {}  # id(env) -> every file binding it
        self.files: set[str] = set()
        self.module_of_file: dict[str, str] = {}  # rel file -> module name
        self.file_by_name: dict[str, str] = {}  # module name -> rel file
        self.file_by_path: dict[str, str] = {}  # a module's __file__ -> rel file
        self.stable = True  # nothing in this result depends on the order modules were loaded in


_REALPATHS: dict[str, str] = {}


def _realpath(path: str) -> str:
    """os.path.realpath, once per path: a warm child's forks scan the same modules again.
    A file that is not a symlink is its directory's real path and its name: one
    lstat per module, and one realpath per directory (realpath lstats every
    component of every path: 5,000 modules made 40,000 calls)."""
    got = _REALPATHS.get(path)
    if got is None:
        parent, name = os.path.split(path)
        if os.path.isabs(path) and name not in ("", ".", "..") and not os.path.islink(path):
            got = os.path.join(_realpath(parent) if parent != path else parent, name)
        else:
            got = os.path.realpath(path)
        _REALPATHS[path] = got
    return got


def scan_loaded(root: str, fa) -> _Loaded:
    out = _Loaded()
    env_types = fa.environment_types()  # once: 76,000 module variables at 5,000 files
    for mod_name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if not f or f.startswith(children.OWN_DIR + "/"):  # ours (a root holding our sources too)
            continue
        real = _realpath(f)
        if not real.startswith(root + "/") or "/site-packages/" in real or "/.venv/" in real:
            continue
        rel_file = real[len(root) + 1:]  # os.path.relpath's answer for a normalised path under the root
        out.files.add(rel_file)
        out.file_by_name[mod_name] = out.file_by_path[f] = rel_file
        if out.module_of_file.setdefault(rel_file, mod_name) != mod_name:
            out.stable = False  # one file loaded under two names
        for var, val in sorted((k, v) for k, v in vars(mod).items() if isinstance(v, env_types)):
            decl = fa.declaring_file(val)
            prev = out.bound.get(id(val))
            here = (var, mod_name, real)
            out.binders.setdefault(id(val), set()).add(real)
            # prefer the binding in the module that declared the environment
            if prev is None or (decl and os.path.realpath(decl) == real and prev[2] != real):
                out.bound[id(val)] = here
    return out


def duplicates(envs: list, root: str, fa) -> list[dict]:
    by_name: dict[str, list] = {}
    for env in envs:
        by_name.setdefault(env.name, [])
        if all(e is not env for e in by_name[env.name]):
            by_name[env.name].append(env)
    duplicates = []
    for name, group in sorted(by_name.items()):
        if len(group) > 1:
            files = sorted({relative(fa.declaring_file(e) or "?", root) for e in group})
            rec = {"name": name, "files": files}
            if len(files) == 1:
                rec.update(_imported_twice(name, files[0], root))
            duplicates.append(rec)
    return duplicates


def _imported_twice(env_name: str, rel: str, root: str) -> dict:
    """{"modules", "message"} when one file made the environment twice because it
    was imported under two module names (a directory under the root is also on
    sys.path, e.g. a uv workspace member's `src`), as flyte reports it; else {}."""
    path = os.path.realpath(os.path.join(root, rel))
    names = sorted({n for n, m in list(sys.modules.items())
                    if getattr(m, "__file__", None) and os.path.realpath(m.__file__) == path}, key=lambda n: (len(n), n))
    if len(names) < 2:
        return {}
    short, long_ = names[0], names[-1]
    depth = len(short.split(".")) - (0 if os.path.basename(path) == "__init__.py" else 1)
    entry = os.path.relpath(Path(path).parents[depth], root)
    return {"modules": [long_, short], "message": (
        f"{rel} was imported under two module names, `{long_}` (its path under the root) and `{short}` "
        f"(from the sys.path entry {entry}), so it made environment `{env_name}` twice: make {entry} a source root "
        f"(source-roots = [\"{entry}\"] in [tool.flyte-build]), or use --root-dir {entry}, or take {entry} off "
        "sys.path (PYTHONPATH, an editable install)")}


def select(req: dict, root: str, modules: dict[str, str], envs: list, fa) -> tuple[list, list[str]]:
    """(the selected environments, problems), as `flyte deploy` selects them."""
    if req["mode"] != "file":
        # `flyte deploy --recursive DIR` (and `--all DIR`) deploys every
        # environment the load created, wherever it is declared
        return list(envs), []
    selected: list = []
    problems: list[str] = []
    target = req["targets"][0]
    target_file = os.path.realpath(os.path.join(root, target))
    target_mod = modules.get(target)
    var = req.get("variable")
    mod = sys.modules.get(target_mod) if target_mod else None
    if mod is None:
        return selected, problems
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
    elif req.get("all"):
        selected = list(envs)  # `flyte deploy --all FILE`: every environment its load created
    else:
        selected = [e for e in envs if os.path.realpath(fa.declaring_file(e) or "") == target_file]
        for v in vars(mod).values():
            if fa.is_environment(v) and all(v is not s for s in selected):
                selected.append(v)
    return selected, problems


def with_dependencies(selected: list) -> list[tuple]:
    """[(env, selected?)]: the selected environments and what they depend on."""
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
    return chosen


def with_package_parents(graph: dict[str, set[str]], loaded: _Loaded) -> dict[str, list[str]]:
    for rel, name in loaded.module_of_file.items():
        # importing a module, whoever asks, runs its packages' __init__ first
        parts = name.split(".")
        parents = [loaded.file_by_name.get(".".join(parts[:i])) for i in range(1, len(parts))]
        graph.setdefault(rel, set()).update(p for p in parents if p and p != rel)
    return {f: sorted(graph.get(f, set()) & loaded.files) for f in sorted(loaded.files)}


def _reach(starts, graph: dict, within: set) -> set:
    """What the graph reaches from those of `starts` that are in `within` (they included)."""
    return reachable((f for f in starts if f in within), graph)


def env_records(chosen: list[tuple], loaded: _Loaded, graph: dict, root: str, fa) -> list[dict]:
    out_envs = []
    for env, is_selected in chosen:
        var, mod_name, bound_file = loaded.bound.get(id(env), (None, "", None))
        data = fa.env_to_data(env, var, mod_name, Path(root), bound_file)
        data["selected"] = is_selected
        # what the child saw loaded while the env's own modules (its file and
        # its tasks' files) were imported: the bundle ships these even when no
        # import statement names them (`import_module(f"pkg.{name}")`)
        data["loaded"] = sorted(_reach([data["file"], *(t["file"] for t in data["tasks"])], graph, loaded.files))
        out_envs.append(data)
    # one order whatever order the modules were imported in (a full and an
    # incremental discovery of the same tree give the same list)
    out_envs.sort(key=lambda d: (d["name"], d["file"], d["module"], d["variable"] or ""))
    return out_envs


def all_envs(envs: list, loaded: _Loaded, root: str, fa) -> tuple[list[list[str]], bool]:
    """Every environment created, with the file that defines it (as env_to_data
    names it), and whether that is independent of the load order: an
    environment bound in several modules, none the declaring one, is bound
    wherever the load order puts it first."""
    all_envs = []
    stable = True
    seen_ids: set[int] = set()
    for env in envs:
        if id(env) in seen_ids:
            continue
        seen_ids.add(id(env))
        decl = fa.declaring_file(env)
        b = loaded.bound.get(id(env))
        file = decl
        if b and (not decl or not os.path.realpath(decl).startswith(root + "/")):
            file = b[2]
        rel_file = file_of_path(file) if file else None
        if rel_file is None:
            stable = False  # defined outside the root: no module here stands for it
        else:
            all_envs.append([env.name, rel_file])
        seen_in = loaded.binders.get(id(env), set())
        if len(seen_in) > 1 and not (decl and os.path.realpath(decl) in seen_in):
            stable = False
    return all_envs, stable


def explained(requested: list[str], graph: dict, loaded_files: set, orphans: set) -> bool:
    """Whether every loaded file is explained by the graph from the requested modules."""
    return not (orphans & loaded_files) and _reach(requested, graph, loaded_files) == loaded_files
