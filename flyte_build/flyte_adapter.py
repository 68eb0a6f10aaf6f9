"""The one place that touches flyte's SDK, private parts included.

Everything flyte-build knows about flyte objects comes through here as plain
data (see `model`): reading TaskEnvironments, their Images and task
signatures, and (for deploys) serializing tasks. The supported flyte versions
are pinned below; `tests/test_flyte_adapter.py` is this module's contract
test, so an SDK change that breaks an assumption fails there first.

This module is imported only in child processes (discovery) and by rules that
need flyte (deploy); a no-op build never imports it.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import os
from pathlib import Path, PurePath
from typing import Any

SUPPORTED_FLYTE = (">=2.12.1", "<2.13")


def flyte_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flyte")
    except PackageNotFoundError:
        return "absent"


def check_version() -> str | None:
    """A warning when the installed flyte is outside the tested range."""
    from packaging.version import Version

    v = flyte_version()
    if v == "absent":
        return "flyte is not installed"
    ver = Version(v)
    if not (Version("2.12.1") <= ver < Version("2.13")):
        return f"flyte {v} is outside the tested range {', '.join(SUPPORTED_FLYTE)}"
    return None


def init_for_discovery(root: Path, project: str | None, domain: str | None) -> None:
    """Initialise flyte offline so module code that calls `flyte.current_domain()`
    or `flyte.current_project()` at import time sees the selected ones."""
    import flyte

    flyte.init(project=project, domain=domain, root_dir=root)


def loaded_environments() -> list:
    from flyte._environment import list_loaded_environments
    from flyte._task_environment import TaskEnvironment

    return [e for e in list_loaded_environments() if isinstance(e, TaskEnvironment)]


def is_environment(obj: Any) -> bool:
    from flyte._task_environment import TaskEnvironment

    return isinstance(obj, TaskEnvironment)


def declaring_file(env) -> str | None:
    return getattr(env, "_declaring_file", None)


def _rel(path: Any, root: Path) -> str:
    p = os.path.realpath(os.fspath(path))
    r = os.path.realpath(root)
    if p == r:
        return "."
    if p.startswith(r + os.sep):
        return Path(os.path.relpath(p, r)).as_posix()
    return p


def plain(value: Any, root: Path) -> Any:
    """A JSON-able copy of an SDK value; paths become root-relative POSIX names."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return plain(value.value, root)
    if isinstance(value, PurePath):
        return _rel(value, root)
    if isinstance(value, dict):
        return {str(k): plain(v, root) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(v, root) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name.lstrip("_")] = plain(getattr(value, f.name), root)
        return out
    if isinstance(value, type):
        return value.__qualname__
    return repr(value)


def image_to_data(image: Any, root: Path) -> Any:
    """"auto", a URI string, None, or a dict of the image's base and layers."""
    from flyte._image import Image

    if image is None or isinstance(image, str):
        return image
    if not isinstance(image, Image):
        return repr(image)
    return {
        "base_image": image.base_image,
        "dockerfile": _rel(image.dockerfile, root) if image.dockerfile else None,
        "registry": image.registry,
        "name": image.name,
        "platform": list(image.platform),
        "python_version": list(image.python_version),
        "extendable": image.extendable,
        "ref_name": image._ref_name,
        "layers": [plain(layer, root) for layer in image._layers],
    }


def _type_name(tp: Any) -> str:
    if tp is inspect.Parameter.empty:
        return "Any"
    return inspect.formatannotation(tp)


def task_to_data(task, root: Path) -> dict:
    func = getattr(task, "func", None)
    module = getattr(func, "__module__", "") if func else ""
    function = getattr(func, "__qualname__", task.short_name) if func else task.short_name
    file = ""
    if func is not None:
        try:
            file = _rel(inspect.getsourcefile(func) or "", root)
        except TypeError:
            file = ""
    iface = task.interface
    inputs = [(n, _type_name(t[0] if isinstance(t, tuple) else t)) for n, t in iface.inputs.items()]
    outputs = [(n, _type_name(t)) for n, t in iface.outputs.items()]
    return {
        "name": task.name, "short_name": task.short_name, "module": module, "function": function,
        "file": file, "inputs": inputs, "outputs": outputs,
    }


def env_to_data(env, variable: str | None, module: str, root: Path, bound_file: str | None = None) -> dict:
    file = declaring_file(env)
    # clone_with() records dataclasses.py as the declaring file: fall back to
    # the module that binds the environment to a variable.
    if bound_file and (not file or _rel(file, root).startswith("/")):
        file = bound_file
    include = []
    base = Path(file).parent if file else root
    for inc in env.include:
        p = Path(inc) if os.path.isabs(inc) else base / inc
        include.append(_rel(p, root))
    extra = {
        "description": env.description,
        "secrets": plain(env.secrets, root),
        "service_account": env.service_account,
        "interruptible": env.interruptible,
        "cache": plain(getattr(env, "cache", None), root),
        "queue": getattr(env, "queue", None),
        "reusable": plain(getattr(env, "reusable", None), root),
        "pod_template": plain(env.pod_template, root),
    }
    return {
        "name": env.name,
        "variable": variable,
        "file": _rel(file, root) if file else "",
        "module": module,
        "depends_on": [d.name for d in env.depends_on],
        "image": image_to_data(env.image, root),
        "resources": plain(env.resources, root),
        "env_vars": dict(sorted((env.env_vars or {}).items())),
        "include": include,
        "tasks": [task_to_data(t, root) for _, t in sorted(env.tasks.items())],
        "extra": extra,
    }
