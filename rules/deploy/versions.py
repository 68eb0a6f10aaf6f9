"""Versions and rendered specs: an env's default version is a content key over
its bundle digest, the image references of it and of its dependencies, and its
serialized task templates, so nothing in it depends on the process, the hash
seed, the machine or the checkout path; its task specs are flyte's templates
with the version, bundle location and images filled in."""

from __future__ import annotations

from flyte_build.rule_api import key_of, strip_digest

from .plan import FORMAT, EnvPlan, TaskPlan

BUNDLE_ROOT = "flyte-build"  # the upload's filename_root: bundles are named by their sha256 below it


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


def render_env(env, t: dict, given: dict, bundle: str | None, images_for_key: dict, images_for_spec: dict,
             bundle_uri: str | None, where: tuple = (None, None, None)) -> EnvPlan:
    """One env's plan: its version and its rendered task specs. `t`: the env's
    serialized entry (specs:<env>); `given`: the run's `version` and `app_source`."""
    from flyte_build.rule_api import flyte_adapter as fa

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

