"""The checks a plan and a deploy make before anything is built: which envs
(the selection and its dependencies, less those assumed deployed), their
versions can be derived, their images carry their dependencies' packages; and
what they can say without running anything (each env's image reference, its
check's state)."""

from __future__ import annotations

import re

from flyte_build.rule_api import UserError

from . import rule as deploy_rule
from .order import split_order
from .params import DeployParams
from .specs_doc import BUNDLE, CHECK, IMAGE


def planned_image(ws, name: str, spec_docs: dict) -> str | None:
    """The env's image reference known without building: the image rule's
    `describe` uri when there is an image target, else flyte's resolution
    (none for an env flyte could not serialize)."""
    rule = ws.rules.get(IMAGE)
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


def check_versions(ws, names: list[str]) -> None:
    """Without --version an env's version is derived from its bundle: one without
    a bundle (copy style none and no `include` files: no bundle target) needs one."""
    if ws.ctx.view.run_params(DeployParams).version:
        return
    for name in names:
        if ws.cfg.copy_style_for(name) == "none" and f"{BUNDLE}:{name}" not in ws.graph.targets:
            raise UserError(f"`{name}` has copy style none, so there is no bundle to derive a version from: give --version V")


def checked_order(ws, names: list[str] | None, assume_deployed) -> tuple[list[str], list[str], str | None]:
    """The deploy order, the left-out dependencies of `names` (default: the
    selected envs) and an app's git source link, after the checks every plan
    and deploy makes first."""
    ctx = ws.ctx
    if names is None:
        names = [e.name for e in ctx.envs if e.selected]
    order, left_out = split_order(ctx, names, assume_deployed)
    check_versions(ws, order)
    check_packages(ctx, order)
    source = None
    if any(ctx.env(n).is_app for n in order):
        from flyte_build.rule_api import flyte_adapter as fa

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
        addr = f"{CHECK}:{n}"
        if addr not in ws.graph.targets:
            out[n] = "none"
            continue
        try:
            out[n] = "to run" if engine.explain(addr)["would_rebuild"] else "passed"
        except UserError as exc:
            out[n] = f"cannot run: {exc}"
    return out

