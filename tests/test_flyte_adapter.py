"""The contract between the flyte_build/flyte_adapter/ package and the installed flyte SDK.

The adapter is the one package that touches flyte, private parts included
(BUILD.md, Architecture). Every name it imports from flyte, every call it makes
with keywords, every attribute it reads is checked here against the installed
SDK, so a flyte upgrade that renames, moves or reshapes one of them fails this
file with the name in the message, not a build deep inside a child process.

The names come from the adapter's own source (the `from flyte... import`
statements of every module in the package), so a new import there is checked without editing this file; the
calls and shapes below are the ones the adapter's code relies on, by function.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import typing
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from flyte_build import flyte_adapter as fa

pytestmark = pytest.mark.timeout(120)

ADAPTER = Path(fa.__file__).parent
MODULES = sorted(ADAPTER.glob("*.py"))


def _flyte_imports() -> list[tuple[str, str]]:
    """(module, name) for every `from flyte[.x] import name` and `import flyte.x` in the adapter's modules."""
    found = set()
    for node in (n for path in MODULES for n in ast.walk(ast.parse(path.read_text(), str(path)))):
        if isinstance(node, ast.ImportFrom) and node.module and (node.module == "flyte" or node.module.startswith("flyte.")):
            found.update((node.module, a.name) for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("flyte."):
                    parent, _, last = a.name.rpartition(".")
                    found.add((parent, last))
    return sorted(found)


IMPORTS = _flyte_imports()


def _get(module: str, name: str):
    return getattr(importlib.import_module(module), name)


def test_installed_flyte_is_one_the_adapter_supports():
    installed = version("flyte")
    assert SpecifierSet(",".join(fa.SUPPORTED_FLYTE)).contains(installed), (
        f"flyte {installed} is installed; flyte_adapter.SUPPORTED_FLYTE is {fa.SUPPORTED_FLYTE}")
    assert fa.flyte_version() == installed


def test_the_adapter_imports_flyte_names_to_check():
    # the AST walk found the adapter's imports (a rename of the module would leave this list empty)
    assert ("flyte._internal.runtime.task_serde", "translate_task_to_wire") in IMPORTS and len(IMPORTS) > 30, IMPORTS
    # every concern's module is read, each one's own flyte imports included
    assert {p.name for p in MODULES} >= {"__init__.py", "version_contract.py", "discovery.py", "serialization.py",
                                         "backend_client.py", "runtime_check.py"}, MODULES
    assert ("flyte._environment", "list_loaded_environments") in IMPORTS  # discovery
    assert ("flyte._initialize", "_initialize_client") in IMPORTS  # backend_client
    assert ("flyte._internal.runtime.entrypoints", "load_task") in IMPORTS  # runtime_check


@pytest.mark.parametrize("module,name", IMPORTS, ids=[f"{m}:{n}" for m, n in IMPORTS])
def test_every_flyte_name_the_adapter_imports_exists(module, name):
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"flyte_adapter imports from {module}, which flyte {version('flyte')} does not have: {exc}")
    if not hasattr(mod, name):
        try:  # `import flyte.x.y`: a submodule
            importlib.import_module(f"{module}.{name}")
        except ImportError:
            pytest.fail(f"flyte_adapter imports {name} from {module}; flyte {version('flyte')} has no such name there")


X = object()  # a stand-in argument: binding checks names and arity, nothing is called

# (module, name) -> (positional args, keyword names) exactly as the adapter calls it
CALLS: dict[tuple[str, str], tuple[int, tuple[str, ...]]] = {
    ("flyte", "init"): (0, ("project", "domain", "org", "root_dir", "images", "image_registry")),  # init_for_discovery
    ("flyte.config", "auto"): (1, ()),
    ("flyte.config._reader", "get_config_file"): (1, ()),
    ("flyte._utils", "sanitize_endpoint"): (1, ()),
    ("flyte.remote._client.auth._auth_utils", "decode_api_key"): (1, ()),
    ("flyte.cli._common", "sanitize_auth_type"): (1, ()),
    ("flyte._initialize", "_platform_to_client_kwargs"): (1, ()),
    ("flyte.config._config", "PlatformConfig"): (0, (
        "endpoint", "insecure", "insecure_skip_verify", "ca_cert_file_path", "command", "proxy_command", "client_id",
        "client_credentials_secret", "scopes", "auth_mode", "http_proxy_url", "disable_keyring")),
    ("flyte._environment", "list_loaded_environments"): (0, ()),
    ("flyte._image", "resolve_code_bundle_layer"): (3, ()),
    ("flyte._deploy", "_get_documentation_entity"): (1, ()),
    ("flyte._deploy", "_update_interface_inputs_and_outputs_docstring"): (2, ()),
    ("flyte._internal.runtime.convert", "convert_upload_default_inputs"): (1, ()),
    ("flyte._internal.runtime.task_serde", "translate_task_to_wire"): (2, ("default_inputs", "task_context")),
    ("flyte._internal.runtime.trigger_serde", "to_task_trigger"): (0, ("t", "task_name", "task_inputs", "task_default_inputs")),
    ("flyte.models", "ActionID"): (0, ("name", "run_name", "project", "domain", "org")),
    ("flyte.models", "RawDataPath"): (0, ("path",)),
    ("flyte.models", "TaskContext"): (0, ("action", "output_path", "version", "raw_data_path", "compiled_image_cache",
                                          "run_base_dir", "report", "custom_context")),
    ("flyte.models", "CodeBundle"): (0, ("computed_version", "tgz", "destination")),
    ("flyte.models", "SerializationContext"): (0, ("version", "project", "domain", "org", "code_bundle", "image_cache", "root_dir")),
    ("flyte._internal.image_cache", "ImageCache"): (0, ("image_lookup",)),
    ("flyte._utils", "local_sys_paths_env"): (1, ()),
    ("flyte._utils", "adjust_sys_path"): (0, ()),
    ("flyte._initialize", "_get_init_config"): (0, ()),
    ("flyte._initialize", "init_config_context"): (1, ()),
    ("flyte._internal.runtime.entrypoints", "download_code_bundle"): (1, ()),
    ("flyte._internal.runtime.entrypoints", "load_task"): (3, ()),  # resolver, *resolver_args
    ("flyte.report", "Report"): (0, ("name",)),
}

# awaited (or asyncio.run) by the adapter: they must stay coroutine functions
ASYNC = [
    ("flyte._initialize", "_initialize_client"),
    ("flyte._internal.runtime.convert", "convert_upload_default_inputs"),
    ("flyte._internal.runtime.trigger_serde", "to_task_trigger"),
    ("flyte._internal.runtime.entrypoints", "download_code_bundle"),
]


@pytest.mark.parametrize("target", sorted(CALLS), ids=[f"{m}:{n}" for m, n in sorted(CALLS)])
def test_every_call_binds_as_the_adapter_makes_it(target):
    module, name = target
    positional, keywords = CALLS[target]
    fn = _get(module, name)
    try:
        inspect.signature(fn).bind(*([X] * positional), **{k: X for k in keywords})
    except TypeError as exc:
        pytest.fail(f"flyte_adapter calls {module}.{name} with {positional} positional argument(s) and keywords "
                    f"{list(keywords)}; flyte {version('flyte')}'s signature {inspect.signature(fn)} refuses it: {exc}")


@pytest.mark.parametrize("target", ASYNC, ids=[f"{m}:{n}" for m, n in ASYNC])
def test_awaited_functions_are_coroutine_functions(target):
    fn = _get(*target)
    assert inspect.iscoroutinefunction(fn), f"flyte_adapter awaits {target[0]}.{target[1]}, which is no longer async"


def test_client_kwargs_are_what_flytes_client_takes():
    # client_kwargs() goes through flyte's PlatformConfig translation; make_client passes them on
    from flyte._initialize import _initialize_client

    kw = fa.client_kwargs({"endpoint": "dns:///127.0.0.1:9", "insecure": True, "auth_type": "ClientSecret",
                           "client_id": "id", "client_secret": "s", "scopes": ["a"]})
    inspect.signature(_initialize_client).bind(**kw)
    assert kw["endpoint"] == "dns:///127.0.0.1:9" and kw["insecure"] is True and kw["disable_keyring"] is False


def test_config_entries_have_the_shape_read_flyte_config_reads():
    from flyte.config import _internal as ent

    entries = {
        "Platform": ("URL", "INSECURE", "INSECURE_SKIP_VERIFY", "CA_CERT_FILE_PATH", "HTTP_PROXY_URL", "DISABLE_KEYRING"),
        "Credentials": ("CLIENT_CREDENTIALS_SECRET_ENV_VAR", "CLIENT_CREDENTIALS_SECRET_LOCATION", "AUTH_MODE", "CLIENT_ID",
                        "COMMAND", "PROXY_COMMAND", "SCOPES"),
        "Task": ("ORG", "PROJECT", "DOMAIN"),
        "Image": ("BUILDER", "REGISTRY", "IMAGE_REFS"),
    }
    for group, names in entries.items():
        for n in names:
            e = getattr(getattr(ent, group), n)
            for attr in ("yaml_entry", "transform", "read"):
                assert hasattr(e, attr), f"flyte.config._internal.{group}.{n} has no `{attr}`"
            for attr in ("env_names", "read_from_file", "switch"):
                assert hasattr(e.yaml_entry, attr), f"flyte.config._internal.{group}.{n}.yaml_entry has no `{attr}`"


def test_config_sections_have_the_fields_read_flyte_config_reads():
    import flyte.config as fc

    cfg = fc.Config()
    wanted = {
        "platform": ("endpoint", "insecure", "insecure_skip_verify", "ca_cert_file_path", "client_credentials_secret", "auth_mode",
                     "client_id", "command", "proxy_command", "scopes", "http_proxy_url", "disable_keyring"),
        "task": ("org", "project", "domain"),
        "image": ("builder", "registry", "image_refs"),
    }
    for section, fields in wanted.items():
        have = {f.name for f in dataclasses.fields(getattr(cfg, section))}
        assert not set(fields) - have, f"flyte's Config.{section} lost {sorted(set(fields) - have)}"


def test_config_reader_and_api_keys_behave_as_the_adapter_expects(tmp_path):
    import base64

    from flyte.config._reader import get_config_file
    from flyte.remote._client.auth._auth_utils import decode_api_key
    from flyte.remote._client.auth._client_config import AuthType

    assert get_config_file(None) is None
    broken = tmp_path / "config.yaml"
    broken.write_text("admin: [unclosed\n")
    assert get_config_file(str(broken)).yaml_config is None  # read_flyte_config turns this into an error
    key = base64.b64encode(b"example.org:client-id:the-secret:my-org").decode()
    assert decode_api_key(key) == ("example.org", "client-id", "the-secret", "my-org")
    assert {"Pkce", "ClientSecret", "ExternalCommand", "DeviceFlow"} <= set(typing.get_args(AuthType))
    assert fa.auth_type_name("client-secret") == "ClientSecret"


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_environments_have_the_fields_env_to_data_reads():
    from flyte._task_environment import TaskEnvironment
    from flyte.app import AppEnvironment
    from flyte.app._types import Domain, Subdomain

    common = {"name", "depends_on", "image", "resources", "env_vars", "include", "description", "secrets",
              "service_account", "interruptible", "pod_template", "_declaring_file"}
    assert not common - _fields(TaskEnvironment), sorted(common - _fields(TaskEnvironment))
    assert not {"cache", "queue", "reusable"} - _fields(TaskEnvironment)
    app = {"type", "port", "args", "command", "requires_auth", "scaling", "domain", "links", "parameters", "cluster_pool",
           "cluster", "timeouts", "_server", "_on_startup", "_on_shutdown"}
    assert not (common | app) - _fields(AppEnvironment), sorted((common | app) - _fields(AppEnvironment))
    assert "subdomain" in _fields(Domain) and {"function", "project_domain_suffix"} <= _fields(Subdomain)


def test_image_has_the_fields_image_to_data_reads():
    from flyte._image import _DEFAULT_IMAGE_REF_NAME, Image

    wanted = {"base_image", "dockerfile", "registry", "name", "platform", "python_version", "extendable", "_ref_name", "_layers"}
    assert not wanted - _fields(Image), sorted(wanted - _fields(Image))
    assert "base_image" in inspect.signature(Image.clone).parameters
    # auto_image_uri hard-codes flyte's default ref name and image naming so no-op builds need not import flyte
    assert _DEFAULT_IMAGE_REF_NAME == "default"
    assert fa.auto_image_uri({}) == Image.from_debian_base().uri
    ref = Image.from_ref_name("base")
    assert ref._ref_name == "base" and not ref._layers


def test_a_declared_env_reads_as_plain_data(tmp_path):
    import flyte

    env = flyte.TaskEnvironment(name="adapter_contract", image=flyte.Image.from_debian_base().with_pip_packages("six"),
                                env_vars={"A": "1"}, description="d")

    @env.task
    async def double(x: int) -> int:
        return 2 * x

    data = fa.env_to_data(env, "env", __name__, tmp_path, bound_file=__file__)
    assert data["name"] == "adapter_contract" and data["kind"] == "task" and data["env_vars"] == {"A": "1"}
    (task,) = data["tasks"]
    assert task["short_name"] == "double" and task["inputs"] == [("x", "int")] and task["outputs"] == [("o0", "int")]
    assert [layer["type"] for layer in data["image"]["layers"]] == ["PipPackages"]
    assert fa.is_environment(env) and not fa.is_app(env)


def test_a_task_serializes_to_a_spec_with_the_placeholders(tmp_path):
    import flyte

    env = flyte.TaskEnvironment(name="adapter_serialize", image="127.0.0.1:5000/x:1")

    @env.task
    async def plus_one(x: int = 1) -> int:
        return x + 1

    (tpl,) = fa.serialize_env_templates(env, Path(__file__).parent, None, None, None, ["adapter_serialize"],
                                        with_bundle=True, sync_local_sys_paths=False)
    spec = fa.render_task_spec(tpl["spec"], "v1", "s3://b/x.tar.gz", {"adapter_serialize": "reg/img:2"}, "p", "d", "o")
    args = spec["task_template"]["container"]["args"]
    assert "--tgz" in args and args[args.index("--tgz") + 1] == "s3://b/x.tar.gz", args
    assert spec["task_template"]["id"]["version"] == "v1" and spec["task_template"]["id"]["project"] == "p"
    assert spec["task_template"]["container"]["image"] == "reg/img:2"
    assert [p["name"] for p in spec.get("default_inputs", [])] == ["x"]
    fa.task_spec_message(spec)  # parses as flyteidl2's TaskSpec


def test_image_cache_transport_round_trips():
    from flyte._internal.image_cache import ImageCache

    out = fa._image_cache_arg(ImageCache(image_lookup={"a": fa.image_placeholder("a"), "b": "x:1"}).to_transport, {"a": "reg/a:2"})
    assert ImageCache.from_transport(out).image_lookup == {"a": "reg/a:2", "b": "x:1"}


def test_runtime_and_git_names_have_their_shape():
    import logging

    from flyte._initialize import _InitConfig
    from flyte._logging import logger
    from flyte.app._runtime import translate_app_env_to_idl
    from flyte.git import GitStatus

    assert "sync_local_sys_paths" in _fields(_InitConfig)  # serialize_app_template replaces it
    # serialize_app_template runs asyncio.run(translate_app_env_to_idl.aio(env, sc))
    inspect.signature(translate_app_env_to_idl).bind(X, X)
    assert inspect.iscoroutinefunction(translate_app_env_to_idl.fn), "translate_app_env_to_idl is no longer an async syncify function"
    assert isinstance(logger, logging.Logger)
    assert callable(GitStatus.from_current_repo) and {"is_valid", "remote_url", "commit_sha"} <= _fields(GitStatus)


_INIT_PROBE = """
import json, sys
from pathlib import Path
from flyte_build import flyte_adapter as fa
from flyte._initialize import _get_init_config
before = list(sys.path)
if sys.argv[1] == "flyte":
    import flyte
    flyte.init(project="p", domain="d", org=None, root_dir=Path(sys.argv[2]), images={"a": "reg/a:1"}, image_registry="reg")
else:
    fa.init_for_discovery(Path(sys.argv[2]), "p", "d", None, {"a": "reg/a:1"}, "reg")
print(json.dumps({"config": repr(_get_init_config()), "added": sys.path[len(before):],
                  "types": "flyte.types" in sys.modules, "plugin": "adapter_probe_plugin" in sys.modules}))
"""


def _init_probe(how: str, root, extra_path: str | None = None) -> dict:
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", _INIT_PROBE, how, str(root)], capture_output=True, text=True,
                         env=env, check=True, timeout=60).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_discovery_init_gives_flytes_init_config_without_importing_flyte_types(tmp_path):
    # with no type plugin registered, discovery sets up flyte as flyte.init does,
    # less the 0.8 s import of flyte.types that only serves plugin loading
    ours, theirs = _init_probe("adapter", tmp_path), _init_probe("flyte", tmp_path)
    assert ours["config"] == theirs["config"] and ours["added"] == theirs["added"] == [str(tmp_path)]
    assert theirs["types"] and not ours["types"]


def test_discovery_init_loads_registered_type_plugins_as_flyte_init_does(tmp_path):
    # a package registering a `flyte.plugins.types` entry point: its transformers
    # must be loaded before any user module runs, so flyte's own init is used
    site = tmp_path / "site"
    dist = site / "adapter_probe_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: adapter-probe-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[flyte.plugins.types]\nprobe = adapter_probe_plugin:register\n")
    (site / "adapter_probe_plugin.py").write_text("def register():\n    pass\n")
    ours = _init_probe("adapter", tmp_path, str(site))
    assert ours["plugin"] and ours["types"], ours
    assert ours["config"] == _init_probe("flyte", tmp_path, str(site))["config"]


def test_the_check_program_runs_on_its_own(tmp_path):
    # check:<env> sends runtime_check's source alone as `python -c` into an image
    # without flyte-build: it must run with no other module of the package
    import json
    import subprocess
    import sys

    program = fa.check_program()
    assert "from ." not in program and "flyte_build" not in program.split('"""', 2)[-1]
    out = subprocess.run([sys.executable, "-I", "-c", program, json.dumps({"version": "check", "tasks": []})],
                         cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith(fa.CHECK_MARKER))
    res = json.loads(line[len(fa.CHECK_MARKER):])
    assert res["flyte"] == version("flyte") and res["tasks"] == {} and res["bundle_error"] is None, res
