"""Deploy plans and deploys: versions, serialized task specs, the backend.

A plan is computed without contacting anything: bundles are built locally,
images are named (not built) by the image rule's `describe`, else by flyte's
own resolution, and each environment's tasks are serialized by flyte's
serializer in a child process into templates (see `flyte_adapter`). The
default version is a content key over the bundle digest, the image references
of the env and of its dependencies, and those templates: nothing in it depends
on the process, the hash seed, the machine or the checkout path.

A real deploy is the `deploy:<env>` rule run by the engine (dependencies
first, independent envs in parallel, a failed env skips its dependents). It
uploads the bundle (DataProxy CreateUploadLocation, then a PUT to the signed
URL) and registers each task (TaskService DeployTask) with the SDK's client.
What was deployed where is remembered per (endpoint, project, domain, org,
env) in the cache's state directory, so an unchanged env is skipped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from flyte_build import graph as graph_mod
from flyte_build.__about__ import __version__
from flyte_build.errors import BuildFailed, UserError
from flyte_build.hashing import key_of, strip_digest

from ..bundle.files import has_bundle
from ..check import rule as check_rule
from ..image import rule as image_rule
from ..specs import rule as specs_rule
from . import failures as ahead
from . import rule as deploy_rule

FORMAT = 2
BUNDLE_ROOT = "flyte-build"  # the upload's filename_root: bundles are named by their sha256 below it


# -- plain results -------------------------------------------------------------
@dataclass(frozen=True)
class TaskPlan:
    name: str
    spec: dict  # the TaskSpec in protobuf's JSON form
    triggers: tuple = ()  # TaskTrigger messages in protobuf's JSON form, deployed with the task


@dataclass(frozen=True)
class EnvPlan:
    env: str
    version: str
    image: str | None
    bundle: str | None  # sha256:<hex>, None for copy style none
    tasks: tuple[TaskPlan, ...]
    depends_on: tuple[str, ...] = ()
    images: dict = field(default_factory=dict)  # every env image the specs name (own and dependencies')
    bundle_uri: str | None = None
    app: dict | None = None  # an app env's App message (protobuf's JSON form); it has no tasks
    # the env's check: target as a deploy would find it: "passed" (cached for these
    # exact image, bundle and specs), "to run", "off" (deploy --no-check) or "none"
    check: str | None = None

    def record(self) -> dict:
        rec = {
            "target": f"deploy:{self.env}", "kind": "deploy", "env": self.env, "version": self.version,
            "image": self.image, "bundle": self.bundle, "bundle_uri": self.bundle_uri,
            "depends_on": list(self.depends_on), "images": dict(self.images), "check": self.check,
            "tasks": [{"name": t.name, "spec": t.spec, "triggers": list(t.triggers)} for t in self.tasks],
            "env_kind": "app" if self.app is not None else "task",
        }
        if self.app is not None:
            rec["app"] = self.app
        return rec


@dataclass(frozen=True)
class Plan:
    envs: tuple[EnvPlan, ...]  # deploy order: dependencies first
    waves: tuple[tuple[str, ...], ...]
    project: str | None = None
    domain: str | None = None
    warnings: tuple[str, ...] = ()
    # dependencies of planned envs that are not deployed (`assume_deployed`,
    # e.g. unaffected since --changed-since REV), in deploy order
    left_out: tuple[str, ...] = ()
    # (env, why) of the selected envs that cannot be planned: those flyte cannot
    # serialize (`failed`) and those depending on one (`skipped`); the rest is planned
    failed: tuple[tuple[str, str], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "tool": __version__, "project": self.project, "domain": self.domain,
            "order": [e.env for e in self.envs], "waves": [list(w) for w in self.waves],
            "envs": [e.record() for e in self.envs], "left_out": list(self.left_out), "warnings": list(self.warnings),
            "failed": [{"env": n, "error": e} for n, e in self.failed],
            "skipped": [{"env": n, "error": e} for n, e in self.skipped],
        }


# -- which envs go ahead, images and checks -------------------------------------
def closure(ctx, order: list[str]) -> list[str]:
    """The envs of `order` and everything they depend on, in deploy order."""
    return graph_mod.deploy_order(ctx, order) if order else []


def going_ahead(ctx, order: list[str], bad: dict) -> tuple[list[str], list[tuple], list[tuple]]:
    """(the envs of `order` that can be planned and deployed, [(env, why)] of
    those that failed (`bad`: env -> (phrase, error)), [(env, why)] of those
    depending on one), each in deploy order. A dependency left out of `order` counts too."""
    failed, skipped, out = [], [], set()
    edges = graph_mod.env_edges(ctx)
    for n in graph_mod.deploy_order(ctx, order):  # dependencies first, so a dependency is decided first
        if n in bad:
            failed.append((n, f"{bad[n][0]}: {bad[n][1]}"))
            out.add(n)
            continue
        dep = next((d for d in sorted(edges.get(n, ())) if d in out), None)
        if dep is not None:
            skipped.append((n, f"depends on `{dep}`, which " + (bad[dep][0] if dep in bad else "is not planned")))
            out.add(n)
    return [n for n in order if n not in out], [f for f in failed if f[0] in order], [k for k in skipped if k[0] in order]


def planned_image(ws, name: str, spec_docs: dict) -> str | None:
    """The env's image reference known without building: the image rule's
    `describe` uri when there is an image target, else flyte's resolution
    (none for an env flyte could not serialize)."""
    rule = ws.rules.get(image_rule.RULE.kind)
    unresolved = None
    if rule is not None and f"{rule.kind}:{name}" in ws.graph.targets and rule.describe is not None:
        described = rule.describe(ws.ctx.env(name), ws.ctx.view)
        if described.get("uri"):
            return described["uri"]
        unresolved = described.get("image_error")
    if name not in spec_docs:
        return None
    t = spec_docs[name]["env"]
    if t.get("image_error"):
        raise UserError(t["image_error"])
    if unresolved:
        # say so: flyte's URI names an image flyte-build cannot build, so a deploy would fail
        ws.ctx.warn(f"`{name}`: flyte-build cannot resolve this env's image ({unresolved}); "
                    f"the plan names flyte's own URI {t.get('image')}, which `image:{name}` will not build")
    return t.get("image")


_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def pip_packages(image) -> set[str]:
    """Normalized names of the pip packages an image spec's layers declare."""
    if not isinstance(image, dict):
        return set()
    out = set()
    for layer in image.get("layers") or []:
        if isinstance(layer, dict) and layer.get("type") == "PipPackages":
            for p in layer.get("packages") or []:
                m = _NAME.match(str(p))
                if m:
                    out.add(re.sub(r"[-_.]+", "-", m.group(1)).lower())
    return out


def check_packages(ctx, names: list[str]) -> list[str]:
    """When env A depends on env B, A's image must carry every pip package B's
    image declares (A loads B's task functions). Warnings; errors under --strict."""
    problems = []
    for name in names:
        env = ctx.env(name)
        mine = pip_packages(env.image)
        for dep in env.depends_on:
            theirs = pip_packages(ctx.env(dep).image)
            missing = sorted(theirs - mine) if isinstance(env.image, dict) and isinstance(ctx.env(dep).image, dict) else []
            if missing:
                problems.append(f"`{name}` depends on `{dep}`, but its image lacks packages `{dep}`'s image declares: {', '.join(missing)}")
    if problems and ctx.options.strict:
        raise UserError("image package check failed (--strict):\n  " + "\n  ".join(problems))
    for p in problems:
        ctx.warn(p)
    return problems


def check_versions(ctx, names: list[str]) -> None:
    if ctx.options.version:
        return
    for name in names:
        if ctx.cfg.copy_style_for(name) == "none" and not has_bundle(ctx.env(name), ctx.view):
            raise UserError(f"`{name}` has copy style none, so there is no bundle to derive a version from: give --version V")


# -- versions and specs ------------------------------------------------------------
def without_source_link(spec: dict) -> dict:
    """A task spec (or its template) less the documentation's git source link:
    flyte links each task to the current commit, so the link moves with every
    commit while what the task runs does not. Versions and deploy keys ignore
    it (flyte's version does not hash it either)."""
    doc = spec.get("spec", spec).get("documentation") if isinstance(spec, dict) else None
    if not isinstance(doc, dict) or "source_code" not in doc:
        return spec
    if "spec" in spec and isinstance(spec["spec"], dict):
        return {**spec, "spec": without_source_link(spec["spec"])}
    return {**spec, "documentation": {k: v for k, v in doc.items() if k != "source_code"}}


def env_version(bundle: str | None, images: dict[str, str | None], tasks: list[dict]) -> str:
    tasks = [without_source_link(t) for t in tasks]
    return key_of({"format": FORMAT, "bundle": bundle, "images": images, "tasks": tasks})[:32]


def env_plan(env, t: dict, given: dict, bundle: str | None, images_for_key: dict, images_for_spec: dict,
             bundle_uri: str | None, where: tuple = (None, None, None)) -> EnvPlan:
    """One env's plan: its version and its rendered task specs. `t`: the env's
    serialized entry (specs:<env>); `given`: the run's `version` and `app_source`."""
    from flyte_build import flyte_adapter as fa

    app = t.get("app")
    version = given.get("version") or env_version(bundle, images_for_key, [app] if app else t["tasks"])
    spec_images = {k: v for k, v in images_for_spec.items() if v}
    tasks = tuple(
        TaskPlan(x["name"], fa.render_task_spec(x["spec"], version, bundle_uri, spec_images, *where),
                 tuple(fa.render_task_spec(tr, version, bundle_uri, spec_images, *where) for tr in x.get("triggers", ())))
        for x in t["tasks"]
    )
    app_spec = None
    if app:
        # an App is rendered like a task spec (same placeholders), plus flyte's git link
        app_spec = fa.render_task_spec(app["spec"], version, bundle_uri, spec_images, *where)
        if given.get("app_source"):
            app_spec["metadata"]["source_code"] = given["app_source"]
    return EnvPlan(env.name, version, images_for_spec.get(env.name), bundle, tasks, tuple(env.depends_on),
                   dict(sorted(images_for_spec.items())), bundle_uri, app_spec)


def dry_run_bundle_uri(bundle: str | None) -> str | None:
    """Where a dry run says the bundle will be: the backend chooses the real place at upload."""
    return f"upload://{BUNDLE_ROOT}/{strip_digest(bundle)}.tar.gz" if bundle else None


def split_order(ctx, names: list[str], assume_deployed=()) -> tuple[list[str], list[str]]:
    """(the envs to deploy, the dependencies left out), each in deploy order.

    The envs to deploy are `names` and their dependencies, dependencies first,
    each once; a dependency in `assume_deployed` (and not itself named) is left
    out: it is expected to be deployed already, so it is neither deployed nor
    contacted, but its image reference still goes into its dependents'
    versions and specs. Leaving one out never leaves out what it depends on
    unless that is in `assume_deployed` too."""
    full = graph_mod.deploy_order(ctx, names)
    skip = set(assume_deployed) - set(names)
    kept = [n for n in full if n not in skip]
    return graph_mod.deploy_order(ctx, kept, expand=False), [n for n in full if n in skip]


def _checked_order(ctx, names: list[str] | None, assume_deployed) -> tuple[list[str], list[str], str | None]:
    """The deploy order, the left-out dependencies of `names` (default: the
    selected envs) and an app's git source link, after the checks every plan
    and deploy makes first."""
    if names is None:
        names = [e.name for e in ctx.envs if e.selected]
    order, left_out = split_order(ctx, names, assume_deployed)
    check_versions(ctx, order)
    check_packages(ctx, order)
    source = None
    if any(ctx.env(n).is_app for n in order):
        from flyte_build import flyte_adapter as fa

        # flyte asks git in the working directory: once, here, before any worker thread
        source = fa.app_source_link(ctx.root)
    return order, left_out, source


def check_states(ws, names: list[str]) -> dict[str, str]:
    """Each env's check: target as a deploy would find it, without running anything:
    "passed" when its key (image, bundle, specs) has a cached result, else "to run";
    "off" under `deploy --no-check`, "none" for an env without one."""
    if not deploy_rule.checked(ws.ctx.view):
        return {n: "off" for n in names}
    engine = ws.engine()
    out = {}
    for n in names:
        addr = f"{check_rule.RULE.kind}:{n}"
        if addr not in ws.graph.targets:
            out[n] = "none"
            continue
        try:
            out[n] = "to run" if engine.explain(addr)["would_rebuild"] else "passed"
        except UserError as exc:
            out[n] = f"cannot run: {exc}"
    return out


def plan(ws, names: list[str] | None = None, reporter=None, assume_deployed=()) -> Plan:
    """The ordered deploy plan of the selected envs (and their dependencies,
    except those in `assume_deployed`: see `split_order`), computed offline:
    bundles are built locally, images are only named."""
    ctx = ws.ctx
    order, left_out, source = _checked_order(ctx, names, assume_deployed)
    needed = closure(ctx, order)  # the selected envs and their dependencies: nothing else is built
    addrs = ahead.targets(ws, needed, ("specs", "bundle"), only={"bundle": set(order)})
    docs, bad, results = ahead.prerequisites(ws, addrs, reporter, build=True)
    order, not_planned, skipped = going_ahead(ctx, order, bad)
    images = ahead.planned_images(ws, docs, needed, planned_image)
    given = {"version": ctx.options.version, "app_source": source}
    envs = []
    checks = check_states(ws, order)
    for n in order:
        b = results.get(f"bundle:{n}")
        digest = b.digest if b else None
        imgs = dict(images)
        e = env_plan(ctx.env(n), docs[n]["env"], given, digest, imgs, imgs, dry_run_bundle_uri(digest),
                     (ctx.cfg.project, ctx.cfg.domain, None))
        envs.append(replace(e, check=checks.get(n)))
    return Plan(tuple(envs), tuple(tuple(w) for w in graph_mod.deploy_levels(ctx, order, expand=False)),
                ctx.cfg.project, ctx.cfg.domain, tuple(ws.all_warnings()), tuple(left_out),
                tuple(not_planned), tuple(skipped))


# -- real deploys ---------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    endpoint: str
    insecure: bool
    project: str
    domain: str
    org: str | None = None
    force: bool = False
    timeout: float = 60.0  # each control-plane call; a server that accepts and never answers must not hang us
    # flyte's client settings (auth type, credentials, CA certificate...): never shown, logged or recorded
    client: dict = field(default_factory=dict, repr=False, compare=False)
    secrets: tuple = field(default=(), repr=False, compare=False)
    auth: str = ""  # the auth type and where it came from, for messages

    def state_dir(self) -> str:
        """Where (under the cache's state/) what was deployed to this backend is remembered."""
        return f"deploys/{key_of([self.endpoint, self.project, self.domain, self.org or ''])[:24]}"

    def params(self) -> dict:
        """What a deploy action declares of its backend (no credentials)."""
        return {"endpoint": self.endpoint, "insecure": self.insecure, "project": self.project, "domain": self.domain,
                "org": self.org, "force": self.force, "timeout": self.timeout}

    def secrets_for_run(self) -> dict:
        return {"client": self.client, "secrets": self.secrets, "auth": self.auth}

    @classmethod
    def of(cls, params: dict, secrets: dict) -> "Target":
        return cls(**params, client=dict(secrets.get("client") or {}), secrets=tuple(secrets.get("secrets") or ()),
                   auth=secrets.get("auth", ""))

    def backend(self):
        from flyte_build import flyte_adapter as fa

        return fa.Backend(self.endpoint, self.insecure, self.timeout, client=self.client, secrets=self.secrets, auth=self.auth)


def backend_target(ws) -> Target:
    """Where and how to deploy: flyte's own configuration (found and read as the
    `flyte` CLI does), under the pyproject table and the flags (see flyte_config)."""
    from flyte_build import flyte_adapter as fa
    from flyte_build import flyte_config

    ctx = ws.ctx
    given = dict(ctx.view.params("deploy"))
    fl = ctx.options.extra.get("_flyte") or {}
    ref = fl.get("ref") or flyte_config.locate(ctx.cfg.flyte_config)
    settings = flyte_config.resolve(ref, fl.get("layers") or {"table": {}, "flags": {}, "pyproject": None})
    values = {k: v.value for k, v in settings.items()}
    if not values["endpoint"]:
        raise UserError("no Flyte endpoint: pass --endpoint, --config FILE, or set admin.endpoint in flyte's config.yaml "
                        f"(looked for it as `flyte` does; found: {ref.path or 'no config file'}) (or use --dry-run)")
    for k in ("project", "domain"):
        if not values[k]:
            raise UserError(f"no Flyte {k}: pass --{k} or set task.{k} in flyte's config.yaml")
    timeout = given.get("timeout") or ctx.cfg.table("deploy").get("timeout", 60.0)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise UserError("Field tool.hatch.build.targets.flyte.deploy.timeout must be a positive number of seconds")
    if values["ca_cert_file_path"] and not os.path.isfile(values["ca_cert_file_path"]):
        raise UserError(f"CA certificate {values['ca_cert_file_path']} (from {settings['ca_cert_file_path'].source}) does not exist")
    secrets = tuple(v for v in (values["client_secret"], values["api_key"]) if v)
    auth = "none (insecure: flyte sends no credentials over plain HTTP)" if values["insecure"] else \
        f"{values['auth_type']} (from {settings['auth_type'].source})"
    return Target(values["endpoint"], bool(values["insecure"]), values["project"], values["domain"], values["org"],
                  bool(given.get("force")), float(timeout), client=fa.client_kwargs(values), secrets=secrets, auth=auth)


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
    from flyte_build.rule_api import Produced

    name, p = req.env.name, req.params
    if not p.get("backend"):
        raise UserError(f"{req.target}: deploys run through `flyte-build deploy` (or flyte_build.deploy)")
    target = Target.of(p["backend"], req.secrets)
    bundle = req.deps.get(f"bundle:{name}")
    t = specs_rule.read(req.deps[f"specs:{name}"])["env"]
    key_images, spec_images = _deploy_images(req)
    digest = bundle.digest if bundle else None
    state_path = f"{target.state_dir()}/envs/{name}.json"
    where = (target.project, target.domain, target.org)
    provisional = env_plan(req.env, t, p, digest, key_images, spec_images, None, where)
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
    final = env_plan(req.env, t, p, digest, key_images, spec_images, bundle_uri, where)
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


def _deploy_app(req, target: Target, final: EnvPlan, meta: dict, state_path: str, deploy_key: str, bundle_uri, uploaded):
    """An app env's deploy: the App message to AppService, as flyte's `App.create` sends it."""
    from flyte_build.rule_api import Produced

    name = final.env
    try:
        outcome = asyncio.run(target.backend().deploy_app(final.app))  # the same client settings as tasks
    except Exception as exc:  # noqa: BLE001 - one clear line, as for tasks
        raise BuildFailed(f"deploying app `{name}` failed: {exc}") from None
    req.log(f"{name}: app {outcome}, version {final.version}")
    state = {"deploy_key": deploy_key, "version": final.version, "bundle_uri": bundle_uri, "app": name}
    return Produced(meta={**meta, "action": "deployed", "bundle_uri": bundle_uri, "tasks": [], "app": name,
                          "registered": [outcome]}, state=((state_path, state), *uploaded))


async def _deploy_tasks(target: Target, tasks) -> list:
    backend = target.backend()
    out = []
    for t in tasks:  # in name order: each request is small, and a server sees a stable sequence
        try:
            out.append(await backend.deploy_task(t.spec, t.triggers))
        except Exception as exc:  # noqa: BLE001 - reported per task
            out.append(exc)
    return out


def _upload_bundle(req, target: Target, bundle) -> tuple[str, tuple]:
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


def deploy(ws, names: list[str] | None = None, reporter=None, jobs: int | None = None, assume_deployed=()):
    """Deploy the selected envs and their dependencies in depends_on order
    (a dependency in `assume_deployed` is resolved but not deployed: see
    `split_order`). Returns the engine's results for the deploy targets, in
    deploy order, left-out dependencies included (action `unchanged`), and the backend."""
    ctx = ws.ctx
    order, left_out, source = _checked_order(ctx, names, assume_deployed)
    target = backend_target(ws)
    needed = closure(ctx, order)  # the selected envs and their dependencies: nothing else is built
    # one serializer child for every env, before the parallel deploys; bundles too, each failing alone
    docs, bad, _ = ahead.prerequisites(ws, ahead.targets(ws, needed, ("specs", "bundle")), reporter, jobs)
    every = [f"deploy:{n}" for n in needed]
    order, not_planned, skipped = going_ahead(ctx, order, bad)
    planned = ahead.planned_images(ws, docs, needed, planned_image, jobs)
    # the deploy targets' declared run parameters, and the credentials their runs get
    params = {"deploy": {"backend": target.params(), "planned": planned, "left_out": sorted(left_out), "app_source": source}}
    engine = ws.engine(reporter, jobs, params=params, secrets={"deploy": target.secrets_for_run()}, fail_alone=True)
    addresses = [f"deploy:{n}" for n in graph_mod.deploy_order(ctx, order)] if order else []
    results = {r.target: r for r in engine.run(addresses)} if addresses else {}
    ws.save_run_stats(list(results.values()))
    for (n, why), status in [*((f, "failed") for f in not_planned), *((k, "skipped") for k in skipped)]:
        results[f"deploy:{n}"] = ahead.NotDeployed(f"deploy:{n}", n, status, why)
    results = ahead.with_reasons(ws, results, needed, bad)
    return [results[a] for a in every if a in results], target
