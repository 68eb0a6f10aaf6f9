"""Reading flyte objects as plain data, in discovery's child: flyte initialised
offline, the TaskEnvironments and AppEnvironments a module created, their
Images and task signatures."""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import os
from pathlib import Path, PurePath
from typing import Any


def init_for_discovery(root: Path, project: str | None, domain: str | None, org: str | None = None,
                       images: dict | None = None, image_registry: str | None = None) -> None:
    """Initialise flyte offline so module code that calls `flyte.current_domain()`
    or `flyte.current_project()` at import time sees the selected ones (no
    endpoint: nothing is contacted)."""
    import flyte

    if type_plugins_registered():
        flyte.init(project=project, domain=domain, org=org, root_dir=root, images=images or None,
                   image_registry=image_registry)
        return
    _init_offline(root, project, domain, org, images, image_registry)


def type_plugins_registered() -> bool:
    """Whether a package registers flyte type transformers (`flyte.plugins.types`),
    which `flyte.init` loads before any user module runs."""
    from importlib.metadata import entry_points

    return bool(entry_points(group="flyte.plugins.types"))


def _init_offline(root: Path, project, domain, org, images, image_registry) -> None:
    """What `flyte.init` does with no endpoint and no type plugin to load, less
    its unconditional import of `flyte.types` (0.8 s of CPU, which neither
    `flyte deploy`'s module loading nor the user's modules need unless they
    import it themselves): the logger, the root appended to sys.path and the
    same init config. tests/test_flyte_adapter.py compares the two."""
    import sys

    import flyte._initialize
    from flyte._initialize import _init_lock, _initialize_logger, _InitConfig
    from flyte._utils import org_from_endpoint

    _initialize_logger(log_level=None, log_format=None, reset_root_logger=False, user_log_level=None)
    with _init_lock:
        sys.path.append(str(root))
        flyte._initialize._init_config = _InitConfig(
            root_dir=root, project=project, domain=domain, client=None, storage=None,
            org=org or org_from_endpoint(None), batch_size=1000, image_builder="local", images=images or {},
            image_registry=image_registry, source_config_path=None, sync_local_sys_paths=True,
            local_persistence=False, local_tracked=False, local_tracked_strict=False,
        )


@functools.lru_cache(maxsize=None)
def _env_types() -> tuple:
    # apps deploy beside task envs in `flyte deploy`; importing flyte.app also
    # registers flyte's own app deployer, as `flyte deploy` has it
    from flyte._task_environment import TaskEnvironment
    from flyte.app import AppEnvironment

    return (TaskEnvironment, AppEnvironment)


def _created_env_types() -> tuple:
    """The environment types whose instances can exist now: AppEnvironment only
    once its module was imported (no app can be made before), so discovery does
    not import flyte.app (flyte.io and flyte.types: 1.5 s of CPU) for a repository
    without apps. Asked once per module variable: 76,000 times at 5,000 files."""
    import sys

    app_module = sys.modules.get("flyte.app._app_environment")
    if app_module is not None:
        return _env_types()
    from flyte._task_environment import TaskEnvironment

    return (TaskEnvironment,)


def loaded_environments(load_apps: bool = True) -> list:
    """Every TaskEnvironment and AppEnvironment created so far, in load order.
    `load_apps=False`: without importing flyte.app when no app can exist (discovery)."""
    from flyte._environment import list_loaded_environments

    types = _env_types() if load_apps else _created_env_types()
    return [e for e in list_loaded_environments() if isinstance(e, types)]


def note_environment_creation(note) -> None:
    """Have `note(env)` called as each environment registers with flyte (the
    warm discovery child charges it to the module whose body made it)."""
    import flyte._environment as fe

    class _Noting(list):
        def append(self, env):
            note(env)
            super().append(env)

    fe._ENVIRONMENT_REGISTRY = _Noting(fe._ENVIRONMENT_REGISTRY)


def forget_environments(drop) -> None:
    """Take the environments `drop(env)` names out of flyte's registry (their
    modules are about to run again in a warm discovery's fork)."""
    import flyte._environment as fe

    fe._ENVIRONMENT_REGISTRY[:] = [e for e in fe._ENVIRONMENT_REGISTRY if not drop(e)]


def environment_types() -> tuple:
    """The classes `is_environment` tests against (valid until flyte.app is imported)."""
    return _created_env_types()


def is_environment(obj: Any) -> bool:
    return isinstance(obj, _created_env_types())


def is_app(env: Any) -> bool:
    return len(_created_env_types()) > 1 and isinstance(env, _env_types()[1])


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
    if callable(value) and hasattr(value, "__qualname__"):
        # a function's repr carries its address: name it instead
        return f"{getattr(value, '__module__', '')}:{value.__qualname__}"
    return repr(value)


def _layer_data(layer: Any, root: Path) -> dict:
    out = plain(layer, root)
    if out.get("type") == "DockerIgnore" and isinstance(out.get("path"), str) and out["path"].strip():
        # with_dockerignore keeps its path as a str (plain() leaves strs alone): make it root-relative
        out["path"] = _rel(out["path"], root)
    return out


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
        "layers": [_layer_data(layer, root) for layer in image._layers],
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
    app = is_app(env)
    if app:
        extra["app"] = app_to_data(env, root)
    return {
        "name": env.name,
        "kind": "app" if app else "task",
        "variable": variable,
        "file": _rel(file, root) if file else "",
        "module": module,
        "depends_on": [d.name for d in env.depends_on],
        "image": image_to_data(env.image, root),
        "resources": plain(env.resources, root),
        "env_vars": dict(sorted((env.env_vars or {}).items())),
        "include": include,
        "tasks": [] if app else [task_to_data(t, root) for _, t in sorted(env.tasks.items())],
        "extra": extra,
    }


def app_to_data(env, root: Path) -> dict:
    """An AppEnvironment's own settings (port, scaling, args, ...), as plain data."""
    fields = ("type", "port", "args", "command", "requires_auth", "scaling", "domain", "links", "parameters",
              "cluster_pool", "cluster", "timeouts")
    out = {f: plain(getattr(env, f, None), root) for f in fields}
    # the server/startup hooks by name: which function serves is part of the declaration
    for hook in ("_server", "_on_startup", "_on_shutdown"):
        fn = getattr(env, hook, None)
        out[hook.lstrip("_")] = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}" if fn else None
    return out
