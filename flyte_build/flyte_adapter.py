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
import functools
import inspect
import os
from pathlib import Path, PurePath
from typing import Any

SUPPORTED_FLYTE = (">=2.12.1", "<2.13")


class NotSupported(Exception):
    """A declaration flyte can deploy and flyte-build cannot (yet); the message says what to do."""


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


# -- flyte's own configuration ---------------------------------------------------
#
# Values come from flyte's loader (`flyte.config.auto`: the YAML file, with the
# FLYTE_* variables over it) and FLYTE_API_KEY as the `flyte` CLI reads it;
# each with where it came from. Secrets are returned as they are: callers mask
# them (`flyte_config.mask`) before anything is shown or recorded.

SECRET_SETTINGS = ("client_secret", "api_key")


def _entry_source(entry, path: str) -> str | None:
    """"$VAR" when an environment variable set it, "FILE: key" when the file did, else None."""
    ye = entry.yaml_entry
    for name in ye.env_names():
        if name in os.environ:
            return f"${name}"
    from flyte.config._reader import get_config_file

    if ye.read_from_file(get_config_file(path), entry.transform) is not None:
        return f"{path}: {ye.switch}"
    return None


def read_flyte_config(path: str | None) -> dict:
    """{setting: {"value": v, "source": s}} as flyte reads its config file `path`
    (None: no file, so flyte's defaults; flyte then reads no FLYTE_* variable
    either), plus FLYTE_API_KEY as the `flyte` CLI applies it."""
    from flyte.config import _internal as ent

    cfg = _load_flyte_config(path)
    pc, tc, ic = cfg.platform, cfg.task, cfg.image
    out: dict = {}

    def put(name, value, entry=None, source=None):
        if source is None and entry is not None and path is not None:
            source = _entry_source(entry, path)
        out[name] = {"value": value, "source": source or "default"}

    put("endpoint", pc.endpoint, ent.Platform.URL)
    put("insecure", pc.insecure, ent.Platform.INSECURE)
    put("insecure_skip_verify", pc.insecure_skip_verify, ent.Platform.INSECURE_SKIP_VERIFY)
    put("ca_cert_file_path", pc.ca_cert_file_path, ent.Platform.CA_CERT_FILE_PATH)
    secret_src = _client_secret_source(pc, path)
    put("auth_type", pc.auth_mode, ent.Credentials.AUTH_MODE,
        source=f"flyte: a client secret is set ({secret_src})" if secret_src and not _entry_source(ent.Credentials.AUTH_MODE, path) else None)
    put("client_id", pc.client_id, ent.Credentials.CLIENT_ID)
    put("client_secret", pc.client_credentials_secret, source=secret_src)
    put("command", pc.command, ent.Credentials.COMMAND)
    put("proxy_command", pc.proxy_command, ent.Credentials.PROXY_COMMAND)
    put("scopes", list(pc.scopes or []), ent.Credentials.SCOPES)
    put("http_proxy_url", pc.http_proxy_url, ent.Platform.HTTP_PROXY_URL)
    put("disable_keyring", pc.disable_keyring, ent.Platform.DISABLE_KEYRING)
    put("org", tc.org, ent.Task.ORG)
    put("project", tc.project, ent.Task.PROJECT)
    put("domain", tc.domain, ent.Task.DOMAIN)
    put("image_builder", ic.builder, ent.Image.BUILDER)
    put("image_registry", ic.registry, ent.Image.REGISTRY)
    put("image_refs", dict(sorted((ic.image_refs or {}).items())), ent.Image.IMAGE_REFS)
    put("api_key", None)
    _apply_api_key(out)
    return out


def _load_flyte_config(path: str | None):
    """flyte's Config from the file `path` (None: flyte's defaults); a broken or non-YAML file is an error."""
    import flyte.config as fc
    from flyte.config._reader import get_config_file

    if path is None:
        return fc.Config()
    try:
        raw = Path(path).read_text()
        cfg = fc.auto(path)
    except Exception as exc:  # noqa: BLE001 - a broken config (or secret file) is the user's to fix
        raise ValueError(f"flyte config {path}: {type(exc).__name__}: {exc}") from None
    if raw.strip() and get_config_file(path).yaml_config is None:
        # flyte only logs a warning and goes on with defaults; a typo must not deploy elsewhere
        raise ValueError(f"flyte config {path}: not valid YAML")
    return cfg


def _client_secret_source(pc, path: str | None) -> str | None:
    """Where the client secret came from (the env var or the file the config names), if it is set."""
    from flyte.config import _internal as ent
    from flyte.config._reader import get_config_file

    if not (pc.client_credentials_secret and path is not None):
        return None
    env_var = _entry_source(ent.Credentials.CLIENT_CREDENTIALS_SECRET_ENV_VAR, path)
    loc = _entry_source(ent.Credentials.CLIENT_CREDENTIALS_SECRET_LOCATION, path)
    var = ent.Credentials.CLIENT_CREDENTIALS_SECRET_ENV_VAR.read(get_config_file(path))
    if var and os.environ.get(var):
        return f"${var} (named by {env_var})"
    if loc:
        return f"the file named by {loc}"
    return None


def _apply_api_key(out: dict) -> None:
    """FLYTE_API_KEY over the file's settings, as `flyte`'s CLI applies it: the key's
    endpoint unless one is given on the command line, its client id and secret,
    client-secret auth, and its org."""
    api_key = os.environ.get("FLYTE_API_KEY")
    if not api_key:
        return
    from flyte._utils import sanitize_endpoint
    from flyte.remote._client.auth._auth_utils import decode_api_key

    try:
        endpoint, client_id, client_secret, org = decode_api_key(api_key)
    except Exception:  # noqa: BLE001 - never echo the key
        raise ValueError("FLYTE_API_KEY is not an API key flyte can decode (base64 of endpoint:client-id:secret:org)") from None
    src = "$FLYTE_API_KEY"
    out["api_key"] = {"value": api_key, "source": src}
    out["endpoint"] = {"value": sanitize_endpoint(endpoint), "source": src}
    out["client_id"] = {"value": client_id, "source": src}
    out["client_secret"] = {"value": client_secret, "source": src}
    out["auth_type"] = {"value": "ClientSecret", "source": src}
    if org and org != "None":
        out["org"] = {"value": org, "source": src}


DISCOVERY_SETTINGS = ("org", "project", "domain", "image_builder", "image_registry", "image_refs")


def discovery_settings(path: str | None) -> dict:
    """The non-secret part of `read_flyte_config`: what discovery initialises flyte with."""
    got = read_flyte_config(path)
    return {k: got[k] for k in DISCOVERY_SETTINGS}


def auth_type_name(value: str | None) -> str:
    """A `--auth-type` value (any spelling `flyte --auth-type` takes) as flyte's AuthType."""
    import typing

    from flyte.cli._common import sanitize_auth_type
    from flyte.remote._client.auth._client_config import AuthType

    if value in typing.get_args(AuthType):
        return value
    return sanitize_auth_type(value)


def client_kwargs(settings: dict) -> dict:
    """The keyword arguments flyte's own `_initialize_client` takes, from plain
    settings (name -> value), through flyte's PlatformConfig translation."""
    from flyte._initialize import _platform_to_client_kwargs
    from flyte.config._config import PlatformConfig

    pc = PlatformConfig(
        endpoint=settings.get("endpoint"), insecure=bool(settings.get("insecure")),
        insecure_skip_verify=bool(settings.get("insecure_skip_verify")),
        ca_cert_file_path=settings.get("ca_cert_file_path"), command=settings.get("command"),
        proxy_command=settings.get("proxy_command"), client_id=settings.get("client_id"),
        client_credentials_secret=settings.get("client_secret"), scopes=list(settings.get("scopes") or []),
        auth_mode=settings.get("auth_type") or "Pkce", http_proxy_url=settings.get("http_proxy_url"),
        disable_keyring=bool(settings.get("disable_keyring")),
    )
    kw = _platform_to_client_kwargs(pc)
    kw["disable_keyring"] = pc.disable_keyring
    return kw


async def make_client(kwargs: dict):
    """flyte's own client for these settings (its auth interceptors included),
    through the function `flyte.init` uses."""
    from flyte._initialize import _initialize_client

    return await _initialize_client(**kwargs)


def scrub(text: str, secrets) -> str:
    """`text` with every secret replaced, for messages that may quote them."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "********")
    return text


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


# -- deploys: images, task serialization, the backend ------------------------
#
# Task specs are serialized once per environment with placeholders for the
# three values that are only known later (the version, the bundle's remote
# location and each environment's image), in the discovery-like child
# process. The parent fills them in with `render_task_spec`. So the template
# is a pure function of the code and the declaration: it can be cached on file
# digests and hashed into the version.

PLACEHOLDER_VERSION = "@@flyte-build:version@@"
PLACEHOLDER_BUNDLE = "@@flyte-build:bundle@@"
# project, domain and org are filled in late too, so one version serves every domain
PLACEHOLDER_PROJECT = "@@flyte-build:project@@"
PLACEHOLDER_DOMAIN = "@@flyte-build:domain@@"
PLACEHOLDER_ORG = "@@flyte-build:org@@"


def image_placeholder(env_name: str) -> str:
    return f"@@flyte-build:image:{env_name}@@"


def auto_image_uri(image_refs: dict[str, str]) -> str:
    """The URI `image="auto"` stands for (flyte's released default image for
    this Python), from package metadata only: no-op builds never import flyte."""
    import sys

    if "default" in image_refs:  # flyte's _DEFAULT_IMAGE_REF_NAME
        return image_refs["default"]
    v = flyte_version().replace("+", "-")
    return f"ghcr.io/flyteorg/flyte:py{sys.version_info[0]}.{sys.version_info[1]}-v{v}"


def resolve_image_uri(env, image_refs: dict[str, str], copy_style: str = "loaded_modules", root: Path | None = None) -> str | None:
    """The env's image reference as flyte resolves it, without building: a URI
    string as is, "auto" as flyte's default image (or `--image default=...`),
    `Image.from_ref_name` through `image_refs`, any other Image by its `uri`
    after `with_code_bundle()` layers are resolved for the copy style, as
    `flyte deploy` resolves them (dropped unless the copy style is none)."""
    from flyte._image import _DEFAULT_IMAGE_REF_NAME, Image, resolve_code_bundle_layer

    img = env.image
    if img is None:
        return None
    if isinstance(img, str):
        if img != "auto":
            return img
        if _DEFAULT_IMAGE_REF_NAME in image_refs:
            return image_refs[_DEFAULT_IMAGE_REF_NAME]
        return Image.from_debian_base().uri
    img = resolve_code_bundle_layer(img, copy_style, Path(root) if root else Path.cwd())
    if img._ref_name is not None:
        if img._ref_name not in image_refs:
            known = ", ".join(sorted(image_refs)) or "none"
            raise ValueError(
                f"environment `{env.name}` uses Image.from_ref_name({img._ref_name!r}), which no `images` entry or "
                f"--image {img._ref_name}=URI names (known: {known})"
            )
        if not img._layers:
            return image_refs[img._ref_name]
        img = img.clone(base_image=image_refs[img._ref_name])
    return img.uri


def _wire_spec(task, sc):
    """One task as `flyte deploy` sends it: flyte's `translate_task_to_wire`
    with the default inputs, the log-link task context, the documentation
    entity and the docstring descriptions of inputs and outputs, plus the
    task's triggers (TaskTrigger messages, sent in the same DeployTask call)."""
    import asyncio

    import flyte.report
    from flyte._deploy import _get_documentation_entity, _update_interface_inputs_and_outputs_docstring
    from flyte._internal.runtime.convert import convert_upload_default_inputs
    from flyte._internal.runtime.task_serde import translate_task_to_wire
    from flyte._internal.runtime.trigger_serde import to_task_trigger
    from flyte.models import ActionID, RawDataPath, TaskContext

    async def build():
        default_inputs = await convert_upload_default_inputs(task.interface)
        action = ActionID(name="{{.actionName}}", run_name="{{.runName}}", project="{{.executionProject}}",
                          domain="{{.executionDomain}}", org="{{.executionOrg}}")
        tctx = TaskContext(
            action=action, output_path=sc.output_path, version=sc.version, raw_data_path=RawDataPath(path=""),
            compiled_image_cache=sc.image_cache, run_base_dir="", report=flyte.report.Report(name=action.name),
            custom_context={},
        )
        spec = translate_task_to_wire(task, sc, default_inputs=default_inputs, task_context=tctx)
        env = task.parent_env() if task.parent_env else None
        if env is not None and env.description:
            spec.environment.description = env.description
        spec.documentation.CopyFrom(_get_documentation_entity(task))
        spec.task_template.interface.CopyFrom(
            _update_interface_inputs_and_outputs_docstring(spec.task_template.interface, task.native_interface))
        triggers = []
        for t in task.triggers:
            triggers.append(await to_task_trigger(t=t, task_name=task.name, task_inputs=spec.task_template.interface.inputs,
                                                  task_default_inputs=list(spec.default_inputs)))
        return spec, triggers

    return asyncio.run(build())


def _module_root(task, root: Path, source_roots: list) -> Path:
    """The directory flyte's resolver names the task's module against: the
    deepest `sys.path` entry under the root holding its file (a src layout's
    `src`, a workspace member's `src`), else the root. flyte names a module
    by its file's path under `root_dir`, so with the root at a src-layout
    project it would say `src.pkg.mod`, a module that does not exist remotely
    (and for a workspace member's task it refuses: "not relative to");
    `pkg.mod`, found through `_F_SYS_PATH`, is the module that was loaded."""
    import inspect

    func = getattr(task, "func", None)
    if func is None:
        return root  # a task that is not a Python function (ContainerTask): no module to name
    try:
        f = os.path.realpath(inspect.getsourcefile(func) or "")
    except TypeError:
        return root
    best = None
    for sr in source_roots:
        s = os.path.realpath(sr)
        if f.startswith(s.rstrip("/") + "/") and (best is None or len(s) > len(best)):
            best = s
    return Path(best) if best else root


def _local_sys_paths(local_sys_paths_env, root: Path) -> dict[str, str]:
    """flyte's FLYTE_SYS_PATH for `root`, less the entries in the interpreter's own
    `.venv` when that lies under the root (uv's and poetry's in-project venvs):
    they are never shipped, and keeping them would make the specs depend on where
    the interpreter lives rather than on the project."""
    from . import children

    env = local_sys_paths_env(root)
    installed = children.installed_under(str(root))
    if not installed:
        return env
    real_root = os.path.realpath(root)
    return {k: ":".join(e for e in v.split(":")
                        if not (os.path.realpath(os.path.join(real_root, e)) + "/").startswith(installed))
            for k, v in env.items()}


def serialize_env_templates(env, root: Path, project: str | None, domain: str | None, org: str | None,
                            image_envs: list[str], with_bundle: bool, sync_local_sys_paths: bool,
                            source_roots: list | None = None) -> list[dict]:
    """Each task of `env` as a TaskSpec in protobuf's JSON form, serialized as
    `flyte deploy` serializes it (see `_wire_spec`), with placeholders (see
    above). `image_envs` are the envs whose images the task's image cache
    names: every env of the deploy, as flyte's merged cache does, so a task
    calling another env's task runs it in that env's image."""
    import copy

    from flyte._internal.image_cache import ImageCache
    from flyte.models import CodeBundle, SerializationContext
    from google.protobuf.json_format import MessageToDict

    def context(module_root: Path):
        return SerializationContext(
            version=PLACEHOLDER_VERSION, project=PLACEHOLDER_PROJECT, domain=PLACEHOLDER_DOMAIN, org=PLACEHOLDER_ORG,
            code_bundle=CodeBundle(computed_version=PLACEHOLDER_BUNDLE, tgz=PLACEHOLDER_BUNDLE) if with_bundle else None,
            image_cache=ImageCache(image_lookup={n: image_placeholder(n) for n in sorted(image_envs)}),
            root_dir=module_root,
        )

    out = []
    for _, task in sorted(env.tasks.items()):
        sc = context(_module_root(task, root, source_roots or []))
        if sync_local_sys_paths:
            # as `flyte deploy` does: the local sys.path entries under the root, relative to it
            from flyte._utils import local_sys_paths_env

            task = copy.copy(task)
            task.env_vars = {**(task.env_vars or {}), **_local_sys_paths(local_sys_paths_env, root)}
        spec, triggers = _wire_spec(task, sc)
        out.append({"name": task.name, "spec": MessageToDict(spec, preserving_proto_field_name=True),
                    "triggers": [MessageToDict(t, preserving_proto_field_name=True) for t in triggers]})
    return out


def serialize_app_template(env, root: Path, image_envs: list[str], with_bundle: bool,
                           sync_local_sys_paths: bool) -> dict:
    """An AppEnvironment as the `App` message flyte's own deploy path builds
    (`flyte.app._runtime.translate_app_env_to_idl`, as `flyte deploy` calls
    it), in protobuf's JSON form, with the same placeholders as task specs.

    Two parts of flyte's message are left out of the template: parameters
    whose value is only known by asking the backend (RunOutput,
    ArtifactValue) are refused (an AppEndpoint is not: the app's server
    resolves it, and flyte serializes it offline), and the git link (`metadata.source_code`) is
    added at render time (`app_source_link`), so the template, and so the
    version, depends on the code, not on the commit it was read at.
    """
    import asyncio
    import dataclasses

    from flyte._initialize import _get_init_config, init_config_context
    from flyte._internal.image_cache import ImageCache
    from flyte.app._parameter import AppEndpoint, _DelayedValue
    from flyte.app._runtime import translate_app_env_to_idl
    from flyte.app._types import Subdomain
    from flyte.models import CodeBundle, SerializationContext
    from google.protobuf.json_format import MessageToDict

    # an AppEndpoint is resolved by the app's server when it starts, so flyte serializes it
    # offline (an input carrying the other app's name); the others ask the backend now
    delayed = [p.name for p in env.parameters if isinstance(p.value, _DelayedValue) and not isinstance(p.value, AppEndpoint)]
    if delayed:
        raise NotSupported(
            f"app `{env.name}`: parameters {', '.join(delayed)} are resolved by asking the backend at deploy time "
            "(RunOutput/ArtifactValue); flyte-build does not support them yet: deploy this app with `flyte deploy`"
        )
    sub = env.domain.subdomain if env.domain else None
    if isinstance(sub, Subdomain) and (sub.function is not None or sub.project_domain_suffix == "hash"):
        raise NotSupported(
            f"app `{env.name}`: a Subdomain computed from the project and domain (a function or the hash suffix) "
            "is not supported yet: give the subdomain as a string, or deploy this app with `flyte deploy`"
        )
    sc = SerializationContext(
        version=PLACEHOLDER_VERSION, project=PLACEHOLDER_PROJECT, domain=PLACEHOLDER_DOMAIN, org=PLACEHOLDER_ORG,
        code_bundle=CodeBundle(computed_version=PLACEHOLDER_BUNDLE, tgz=PLACEHOLDER_BUNDLE) if with_bundle else None,
        image_cache=ImageCache(image_lookup={n: image_placeholder(n) for n in sorted(image_envs)}),
        root_dir=root,
    )
    # flyte reads sync_local_sys_paths from its init config, as `flyte deploy --no-sync-local-sys-paths` sets it
    cfg = dataclasses.replace(_get_init_config(), sync_local_sys_paths=sync_local_sys_paths)
    with init_config_context(cfg):
        app = asyncio.run(translate_app_env_to_idl.aio(env, sc))
    # as flyte's `_deploy_app` does: the env's entry in the image cache names its container image
    if app.spec.HasField("container"):
        app.spec.container.image = image_placeholder(env.name)
    app.metadata.ClearField("source_code")
    return {"name": env.name, "spec": MessageToDict(app, preserving_proto_field_name=True)}


def app_source_link(root: Path) -> dict | None:
    """`metadata.source_code` as flyte sets it on an App: the repository's
    remote at the checked-out commit, when `root` is in a git checkout with a
    remote. flyte asks git in the working directory: call this from the main
    thread before any worker starts (it changes directory for the call)."""
    import logging

    from flyte._logging import logger
    from flyte.git import GitStatus

    here, level = os.getcwd(), logger.level
    logger.setLevel(logging.ERROR)  # "Not in a git repository" is no news to a build
    try:
        os.chdir(root)
        status = GitStatus.from_current_repo()
    finally:
        os.chdir(here)
        logger.setLevel(level)
    if not status.is_valid:
        return None
    return {"link": f"{status.remote_url}/tree/{status.commit_sha}"}


def _image_cache_arg(value: str, images: dict[str, str]) -> str:
    from flyte._internal.image_cache import ImageCache

    cache = ImageCache.from_transport(value)
    by_placeholder = {image_placeholder(n): uri for n, uri in images.items()}
    lookup = {n: by_placeholder.get(v, v) for n, v in sorted(cache.image_lookup.items())}
    return ImageCache(image_lookup=lookup).to_transport


def render_task_spec(template: dict, version: str, bundle_uri: str | None, images: dict[str, str],
                     project: str | None = None, domain: str | None = None, org: str | None = None) -> dict:
    """A template from `serialize_env_templates` with the real version, bundle
    location and image references filled in (still protobuf's JSON form)."""
    import json

    def fill(value):
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            out = [fill(v) for v in value]
            for i in range(len(out) - 1):
                if out[i] == "--image-cache" and isinstance(out[i + 1], str):
                    out[i + 1] = _image_cache_arg(value[i + 1], images)
            return out
        if isinstance(value, str) and "@@flyte-build:" in value:
            value = value.replace(PLACEHOLDER_VERSION, version).replace(PLACEHOLDER_BUNDLE, bundle_uri or "")
            value = value.replace(PLACEHOLDER_PROJECT, project or "").replace(PLACEHOLDER_DOMAIN, domain or "")
            value = value.replace(PLACEHOLDER_ORG, org or "")
            for n, uri in images.items():
                value = value.replace(image_placeholder(n), uri)
        return value

    return json.loads(json.dumps(fill(template)))


def task_spec_message(spec: dict):
    """protobuf JSON form -> flyteidl2 TaskSpec."""
    from flyteidl2.task import task_definition_pb2
    from google.protobuf.json_format import ParseDict

    return ParseDict(spec, task_definition_pb2.TaskSpec())


def _is_auth_error(exc: BaseException | None) -> bool:
    """A refusal of the credentials, anywhere in the chain (flyte wraps some, e.g.
    SelectCluster failures, in RuntimeError)."""
    from connectrpc.code import Code
    from connectrpc.errors import ConnectError

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ConnectError) and exc.code in (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED):
            return True
        if type(exc).__name__ in ("AuthenticationError", "AccessTokenNotFoundError"):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class Backend:
    """The SDK's connect-protocol client for one endpoint, used from one event loop."""

    def __init__(self, endpoint: str, insecure: bool = False, timeout: float = 60.0, client: dict | None = None,
                 secrets: tuple = (), auth: str = ""):
        self.endpoint = endpoint
        self.insecure = insecure
        self.timeout = timeout
        # keyword arguments for flyte's own client (see client_kwargs): auth type, credentials, CA
        self.client_kwargs = dict(client or {"endpoint": endpoint, "insecure": insecure})
        self.secrets = secrets
        self.auth = auth
        self._client = None

    async def _within(self, awaitable, what: str):
        import asyncio
        import time

        started = time.monotonic()
        try:
            return await asyncio.wait_for(awaitable, self.timeout)
        except Exception as exc:
            # the connect client turns our cancellation into its own "Request was cancelled"
            if time.monotonic() - started >= self.timeout:
                raise TimeoutError(f"{what}: no answer from {self.endpoint} within {self.timeout:g} s") from None
            if _is_auth_error(exc):
                msg = scrub(f"{type(exc).__name__}: {exc}", self.secrets)
                raise PermissionError(f"{what}: {self.endpoint} refused the credentials (auth {self.auth}): {msg}") from None
            if any(x and x in str(exc) for x in self.secrets):
                raise RuntimeError(scrub(f"{type(exc).__name__}: {exc}", self.secrets)) from None
            raise

    async def _clients(self):
        if self._client is None:
            self._client = await self._within(make_client(self.client_kwargs), "connecting to the control plane")
        return self._client

    async def upload_location(self, project: str, domain: str, org: str | None, filename: str, root: str,
                              content_md5: bytes, size: int) -> tuple[str, str, dict]:
        """DataProxy CreateUploadLocation: (signed URL, native URL, extra headers)."""
        from flyteidl2.dataproxy import dataproxy_service_pb2 as dp
        from google.protobuf import duration_pb2

        client = await self._clients()
        expires = duration_pb2.Duration(seconds=3600)
        resp = await self._within(client.dataproxy_service.create_upload_location(dp.CreateUploadLocationRequest(
            project=project, domain=domain, org=org or "", filename=filename, filename_root=root,
            content_md5=content_md5, expires_in=expires, add_content_md5_metadata=True, content_length=size,
        )), "CreateUploadLocation")
        return resp.signed_url, resp.native_url, dict(resp.headers)

    async def deploy_task(self, spec: dict, triggers: list[dict] | tuple = ()) -> str:
        """TaskService DeployTask with the task's triggers; "deployed", or
        "exists" when that version is already registered."""
        from connectrpc.code import Code
        from connectrpc.errors import ConnectError
        from flyteidl2.task import task_definition_pb2, task_service_pb2
        from google.protobuf.json_format import ParseDict

        msg = task_spec_message(spec)
        trigger_msgs = [ParseDict(t, task_definition_pb2.TaskTrigger()) for t in triggers]
        tid = msg.task_template.id
        task_id = task_definition_pb2.TaskIdentifier(org=tid.org, project=tid.project, domain=tid.domain, name=tid.name, version=tid.version)
        client = await self._clients()
        try:
            await self._within(
                client.task_service.deploy_task(task_service_pb2.DeployTaskRequest(task_id=task_id, spec=msg, triggers=trigger_msgs)),
                f"DeployTask {tid.name}",
            )
        except ConnectError as exc:
            if exc.code == Code.ALREADY_EXISTS:
                return "exists"
            raise RuntimeError(f"DeployTask {tid.name}: {exc.code.name.lower()}: {exc.message}") from None
        return "deployed"

    async def deploy_app(self, spec: dict) -> str:
        """AppService Create, as flyte's `App.create` does it: "deployed"; when the app
        exists (ALREADY_EXISTS, or ABORTED), Get it and Update its spec ("updated"),
        unless the spec is the same ("exists")."""
        from connectrpc.code import Code
        from connectrpc.errors import ConnectError
        from flyteidl2.app import app_definition_pb2, app_payload_pb2
        from google.protobuf.json_format import MessageToDict, ParseDict

        app = ParseDict(spec, app_definition_pb2.App())
        name = app.metadata.id.name
        client = await self._clients()
        try:
            try:
                await self._within(client.app_service.create(app_payload_pb2.CreateRequest(app=app)), f"Create app {name}")
                return "deployed"
            except ConnectError as exc:
                if exc.code not in (Code.ALREADY_EXISTS, Code.ABORTED):
                    raise
            got = await self._within(client.app_service.get(app_payload_pb2.GetRequest(app_id=app.metadata.id)), f"Get app {name}")
            current = got.app
            app.spec.creator.CopyFrom(current.spec.creator)
            old, new = MessageToDict(current.spec), MessageToDict(app.spec)
            if not new.get("ingress") and "ingress" in old:
                new["ingress"] = old["ingress"]  # flyte keeps the backend's ingress when none is asked for
            if old == new:
                return "exists"
            updated = app_definition_pb2.App(
                metadata=app_definition_pb2.Meta(id=current.metadata.id, revision=current.metadata.revision,
                                                 labels=app.metadata.labels or current.metadata.labels),
                spec=app.spec, status=current.status,
            )
            await self._within(client.app_service.update(app_payload_pb2.UpdateRequest(
                app=updated, reason="User requested serve from sdk")), f"Update app {name}")
            return "updated"
        except ConnectError as exc:
            raise RuntimeError(f"deploying app {name}: {exc.code.name.lower()}: {exc.message}") from None


# -- check:<env> ------------------------------------------------------------------
#
# `check_in_image` runs INSIDE the env's image, under the interpreter of its `a0`:
# the check rule sends this module's source as `python -c` (the image has flyte,
# not flyte-build; everything above imports only the standard library at module
# level). It does what flyte's runtime does before a task starts: put `.` and
# _F_SYS_PATH on sys.path, fetch and extract the `--tgz` bundle into `--dest`
# (flyte's own download_code_bundle), then load each task with the spec's
# resolver and loader args (flyte's own load_task).

CHECK_MARKER = "@@flyte-build:check@@"


def _load_error(exc: BaseException) -> str:
    # load_task re-raises a ModuleNotFoundError with a long diagnostic: report its cause
    cause = exc.__cause__ if isinstance(exc, ModuleNotFoundError) and isinstance(exc.__cause__, ImportError) else exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def check_in_image(req: dict) -> dict:
    """req: {"tgz", "dest", "version", "tasks": [{"name", "resolver", "resolver_args"}]}."""
    import asyncio
    import shutil
    import sys
    from importlib.metadata import PackageNotFoundError, version

    out: dict = {"a0": shutil.which("a0"), "python": sys.executable, "flyte": None, "user": None,
                 "cwd": os.getcwd(), "tasks": {}, "bundle_error": None}
    try:
        import pwd

        out["user"] = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        out["user"] = str(os.getuid())
    try:
        out["flyte"] = version("flyte")
    except PackageNotFoundError:
        return out
    sys.path.insert(0, ".")  # as a0 does before anything else
    try:
        from flyte._internal.runtime.entrypoints import download_code_bundle, load_task
        from flyte._utils import adjust_sys_path
        from flyte.models import CodeBundle

        if req.get("tgz"):
            bundle = CodeBundle(tgz=req["tgz"], destination=req.get("dest") or ".", computed_version=req["version"])
            asyncio.run(download_code_bundle(bundle))
        else:
            adjust_sys_path()
    except Exception as exc:  # noqa: BLE001 - reported as the check's finding
        out["bundle_error"] = _load_error(exc)
        return out
    for t in req["tasks"]:
        try:
            load_task(t["resolver"], *t["resolver_args"])
            out["tasks"][t["name"]] = None
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything at import
            if isinstance(exc, KeyboardInterrupt):
                raise
            out["tasks"][t["name"]] = _load_error(exc)
    return out


def check_program() -> str:
    """The `python -c` program that runs `check_in_image(json.loads(sys.argv[1]))` and
    prints its result after CHECK_MARKER (flyte's logging may print before it)."""
    import inspect
    import sys

    source = inspect.getsource(sys.modules[__name__])
    return source + (
        "\n\nif __name__ == '__main__':\n"
        "    import json as _json, sys as _sys\n"
        "    _res = check_in_image(_json.loads(_sys.argv[1]))\n"
        "    print(CHECK_MARKER + _json.dumps(_res), flush=True)\n"
    )
