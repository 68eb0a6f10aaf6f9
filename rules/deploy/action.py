"""The deploy:<env> rule's action: render the env's specs for this backend,
skip it when its deploy key is unchanged, else upload its bundle (DataProxy
CreateUploadLocation, then a PUT to the signed URL) and register its tasks
(TaskService DeployTask) or its app (AppService) with the SDK's client.
What was deployed where is remembered in the rule's state (`Produced.state`),
per backend (`ControlPlane.state_dir`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

from flyte_build.rule_api import BuildFailed, Produced, UserError, key_of, strip_digest

from .control_plane import ControlPlane
from .plan import EnvPlan
from .specs_doc import SPECS, specs_doc
from .versions import BUNDLE_ROOT, render_env, without_source_link


def _deploy_images(req) -> tuple[dict, dict]:
    """(images for the deploy key, images for the task specs), by env name: this env's
    image as built (pinned by digest), its dependencies' as they deployed them, and
    every other env's by its planned reference (a content-addressed tag), since
    every env's image is in each task's image cache."""
    name = req.env.name
    planned = dict(req.params["planned"])
    own = planned.pop(name, None)
    key_images: dict = dict(planned)
    spec_images: dict = dict(planned)
    for d in req.env.depends_on:
        dep = req.deps.get(f"deploy:{d}")
        if dep is not None:
            key_images.update(dep.meta.get("key_images", {}))
            spec_images.update(dep.meta.get("images", {}))
    image_res = req.deps.get(f"image:{name}")
    key_images[name] = own
    spec_images[name] = (image_res.meta.get("pinned") or image_res.meta.get("uri")) if image_res else own
    return key_images, spec_images


def _deploy_key(provisional: EnvPlan, digest, spec_images: dict) -> str:
    """What decides whether the env needs deploying again (its state file keeps the last one)."""
    # an App's git link moves with every commit; what it deploys does not
    app_key = {**provisional.app, "metadata": {k: v for k, v in provisional.app["metadata"].items() if k != "source_code"}} \
        if provisional.app else None
    return key_of({"version": provisional.version, "bundle": digest, "images": spec_images,
                   "tasks": [without_source_link(t.spec) for t in provisional.tasks], "triggers": [t.triggers for t in provisional.tasks],
                   "app": app_key})


def run_action(req):
    """The deploy:<env> rule's action: everything it reads is declared (the
    backend, the planned images, the specs, the bundle and image results)."""

    name, p = req.env.name, req.params
    if not p.get("backend"):
        raise UserError(f"{req.target}: deploys run through `flyte-build deploy` (or flyte_build.deploy)")
    target = ControlPlane.of(p["backend"], req.secrets)
    bundle = req.deps.get(f"bundle:{name}")
    t = specs_doc(req.deps[f"{SPECS}:{name}"])["env"]
    key_images, spec_images = _deploy_images(req)
    digest = bundle.digest if bundle else None
    state_path = f"{target.state_dir()}/envs/{name}.json"
    where = (target.project, target.domain, target.org)
    provisional = render_env(req.env, t, p, digest, key_images, spec_images, None, where)
    deploy_key = _deploy_key(provisional, digest, spec_images)
    meta = {"version": provisional.version, "image": spec_images[name], "bundle": digest, "images": spec_images,
            "key_images": key_images, "deploy_key": deploy_key, "endpoint": target.endpoint,
            "project": target.project, "domain": target.domain}
    if p.get("left_out"):
        # a dependency assumed deployed: its image and bundle were resolved
        # (its dependents pin them), the backend is not contacted
        req.log(f"{name}: left out (assumed deployed already); not contacted")
        return Produced(meta={**meta, "action": "unchanged", "left_out": True, "tasks": [t.name for t in provisional.tasks]})
    last = req.state(state_path)
    if last and last.get("deploy_key") == deploy_key and not target.force:
        req.log(f"{name}: unchanged since its deploy of version {provisional.version}; skipped")
        return Produced(meta={**meta, "action": "unchanged", "tasks": [t.name for t in provisional.tasks]})

    bundle_uri, uploaded = _upload_bundle(req, target, bundle) if bundle else (None, ())
    final = render_env(req.env, t, p, digest, key_images, spec_images, bundle_uri, where)
    if final.app is not None:
        return _deploy_app(req, target, final, meta, state_path, deploy_key, bundle_uri, uploaded)
    outcomes = asyncio.run(_deploy_tasks(target, final.tasks))
    failed = [(t, o) for t, o in zip(final.tasks, outcomes) if isinstance(o, BaseException)]
    if failed:
        t, exc = failed[0]
        raise BuildFailed(f"deploying task {t.name} of `{name}` failed: {exc}")
    req.log(f"{name}: deployed {len(final.tasks)} tasks, version {final.version}")
    state = {"deploy_key": deploy_key, "version": final.version, "bundle_uri": bundle_uri, "tasks": [t.name for t in final.tasks]}
    return Produced(meta={**meta, "action": "deployed", "bundle_uri": bundle_uri, "tasks": [t.name for t in final.tasks],
                          "registered": [o for o in outcomes]}, state=((state_path, state), *uploaded))


def _deploy_app(req, target: ControlPlane, final: EnvPlan, meta: dict, state_path: str, deploy_key: str, bundle_uri, uploaded):
    """An app env's deploy: the App message to AppService, as flyte's `App.create` sends it."""

    name = final.env
    try:
        outcome = asyncio.run(target.backend().deploy_app(final.app))  # the same client settings as tasks
    except Exception as exc:  # noqa: BLE001 - one clear line, as for tasks
        raise BuildFailed(f"deploying app `{name}` failed: {exc}") from None
    req.log(f"{name}: app {outcome}, version {final.version}")
    state = {"deploy_key": deploy_key, "version": final.version, "bundle_uri": bundle_uri, "app": name}
    return Produced(meta={**meta, "action": "deployed", "bundle_uri": bundle_uri, "tasks": [], "app": name,
                          "registered": [outcome]}, state=((state_path, state), *uploaded))


async def _deploy_tasks(target: ControlPlane, tasks) -> list:
    backend = target.backend()
    out = []
    for t in tasks:  # in name order: each request is small, and a server sees a stable sequence
        try:
            out.append(await backend.deploy_task(t.spec, t.triggers))
        except Exception as exc:  # noqa: BLE001 - reported per task
            out.append(exc)
    return out


def _upload_bundle(req, target: ControlPlane, bundle) -> tuple[str, tuple]:
    """(the bundle's remote location, the state to remember it by); uploaded
    unless this backend already has it."""
    import httpx

    hex_ = strip_digest(bundle.digest)
    record_path = f"{target.state_dir()}/bundles/{hex_}.json"
    known = req.state(record_path)
    if known and known.get("native_url"):
        req.log(f"bundle {bundle.digest} already uploaded: {known['native_url']}")
        return known["native_url"], ()
    path = Path(bundle.path)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != hex_:
        raise BuildFailed(f"{bundle.target}: cache blob is corrupt; run the build again")
    md5 = hashlib.md5(data).digest()

    async def locate():
        return await target.backend().upload_location(
            target.project, target.domain, target.org, f"{hex_}.tar.gz", BUNDLE_ROOT, md5, len(data))

    try:
        signed, native, headers = asyncio.run(locate())
    except Exception as exc:  # noqa: BLE001
        raise BuildFailed(f"CreateUploadLocation for {bundle.target} failed: {exc}") from None
    headers = {**headers, "Content-MD5": base64.b64encode(md5).decode(), "Content-Length": str(len(data))}
    try:
        resp = httpx.put(signed, content=data, headers=headers, timeout=max(target.timeout, 120))
    except httpx.HTTPError as exc:
        raise BuildFailed(f"uploading {bundle.target} to its signed URL failed: {type(exc).__name__}: {exc}") from None
    if resp.status_code >= 300:
        raise BuildFailed(f"uploading {bundle.target} to its signed URL failed: HTTP {resp.status_code} {resp.text[:200]}")
    req.log(f"uploaded bundle {bundle.digest} to {native}")
    return native, ((record_path, {"native_url": native}),)

