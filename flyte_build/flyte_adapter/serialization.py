"""Serializing tasks and apps for a deploy: templates with placeholders, rendered
late with the version, the bundle's location, the project/domain/org and images."""

from __future__ import annotations

import os
from pathlib import Path

from ..processes import children  # at import: `flyte_build` may be the user's package by the time a task serializes
from .version_contract import flyte_version


class NotSupported(Exception):
    """A declaration flyte can deploy and flyte-build cannot (yet); the message says what to do."""


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
