"""image:<env> — the container image derived from the environment's flyte.Image.

The spec renders (dockerfile.py) into a Dockerfile and an exact build
context; the tag is the hash of those (plus base, build args, platforms), so
`targets --json` shows the URI before anything is built. On a cache miss the
registry is asked first: a tag it already holds is a hit (`source: remote`)
and nothing is built. Otherwise Docker builds it (docker_engine.py): the
cacheable action builds and never pushes. Pushing is the kind's `deliver`
step (publish.py), which the engine runs every run after the action, hit or
miss, and never caches: with a registry it asks the registry for the tag and
pushes only what is not there, and the record gains `image_digest` and
`pinned` (`name@sha256:...`) for deploys, as the registry says them this run.
The Dockerfile and context are kept as a deterministic `.tar.gz` artifact.

Envs with `image="auto"`, a URI string or a bare `from_ref_name`/`from_base`
get a target too: it builds nothing and reports the reference (and, when the
registry says, its digest), so deploys read every env's image the same way.
Several envs with one spec share one tag and one action key, and the engine
runs one key once: the image is built once.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from flyte_build.rule_api import ConfigTable, Inputs, Produced, Request, Rule, UserError, checks, extract_all, write_tar_gz

from . import docker_engine
from . import dockerfile as df
from . import publish

VERSION = "2"  # 2: the docker build's network and builder are declared params
FIELD = "tool.hatch.build.targets.flyte.docker"
ARTIFACT = "image-context.tar.gz"


CONFIG = ConfigTable(keys={
    "network": checks.string,  # docker build --network (hosts without a bridge need "host")
    "builder": checks.choice("auto", "buildkit", "classic"),
    "push": checks.boolean,
    # {"debian" = "<image standing for flyte's debian base>"}
    "base-images": ConfigTable(keys={"debian": checks.string}, hint="use base-map for any other base"),
    "base-map": checks.string_table,  # any base URI -> replacement
    "debian-recipe": checks.choice("full", "light"),
    "build-args": checks.string_table,
    "requirements-from": checks.choice("pip", "pex"),
    "code-dir": checks.string,
})
DEFAULTS = {"network": "host", "builder": "auto", "debian-recipe": "full", "requirements-from": "pip", "code-dir": "/root"}


def options(cfg) -> dict:
    return {**DEFAULTS, **checks.check(CONFIG, FIELD, cfg.table("docker"))}


def _uses_pex(env, view, opts) -> bool:
    return opts["requirements-from"] == "pex" and isinstance(env.image, dict) and view.has_target(f"pex:{env.name}")


def _pex_fingerprint(env, view) -> dict:
    """What decides the env's PEX's bytes, known before it is built: its target's
    declared inputs (params and file digests), asked of the engine."""
    declared = view.inputs_of(f"pex:{env.name}")
    return {"params": declared.params, "files": [[n, view.digest(p)[0]] for n, p in declared.files]}


def _code_bundle_layers(img: dict) -> list[dict]:
    return [layer for layer in img.get("layers") or () if isinstance(layer, dict) and layer.get("type") == "CodeBundleLayer"]


def _resolve_code_bundle(img: dict, style: str) -> dict:
    """`Image.with_code_bundle()` as flyte resolves it by copy style: dropped
    unless the copy style is none; under none, "all" becomes a copy of the
    whole root and "loaded_modules" is what `_bake` puts in."""
    cbs = _code_bundle_layers(img)
    if not cbs:
        return img
    layers = [layer for layer in img.get("layers") or () if layer not in cbs]
    if style == "none":
        for cb in cbs:
            if cb.get("copy_style") == "all":
                layers.append({"type": "CopyConfig", "path_type": 1, "src": "", "dst": cb.get("dst") or "."})
    return {**img, "layers": layers}


def _bake(env, view) -> dict:
    """copy style none: the env's code is baked into an image flyte-build
    builds (its import closure + include). An image it does not build (a
    reference: a URI, a bare `from_ref_name`, "auto") is used as it is, as
    flyte uses it: the code is expected to be in it already."""
    if view.cfg.copy_style_for(env.name) != "none":
        return {}
    img = env.image
    if not isinstance(img, dict):
        return {}
    img = _resolve_code_bundle(img, "none")
    if not img.get("layers") and not img.get("dockerfile"):
        return {}
    if any(cb.get("copy_style") == "all" for cb in _code_bundle_layers(env.image)):
        return {}  # the whole root is copied by the layer itself
    files = {view.rel(p): p for p in view.closure(env)}
    files.update(view.include_files(env))
    return dict(sorted(files.items()))


def _list_folder(view):
    return view.walk  # the walk's warnings become the run's


def _reference(uri) -> dict:
    """The plan of an image flyte-build does not build: a reference to use as it is."""
    return {"mode": "reference", "uri": uri, "files": [], "params": {"mode": "reference", "uri": uri}}


def _render(env, view, img: dict, opts: dict, refs: dict) -> df.Rendered:
    return df.render(
        _resolve_code_bundle(img, view.cfg.copy_style_for(env.name)),
        view.root,
        df.Options(
            base_images=opts.get("base-images", {}),
            base_map=opts.get("base-map", {}),
            debian_recipe=opts["debian-recipe"],
            build_args=opts.get("build-args", {}),
            refs=refs,
            use_pex=_uses_pex(env, view, opts),
            bake=_bake(env, view),
            code_dir=opts["code-dir"],
            project_dir=str(view.cfg.pyproject.parent.resolve()) if view.cfg.pyproject else None,
            allow_secrets=tuple(view.cfg.allow_secrets),
        ),
        f"`{env.name}`",
        _list_folder(view),
    )


def image_facts(env, view) -> dict:
    """Everything about the env's image that is known without building it."""
    opts = options(view.cfg)
    refs = view.image_refs()
    img = env.image
    if isinstance(img, str):
        if img == "auto":
            from flyte_build.rule_api import auto_image_uri

            return _reference(auto_image_uri(refs))
        return _reference(img)
    rendered = _render(env, view, img, opts, refs)
    if rendered.dockerfile is None:
        return _reference(rendered.base)
    files = [(n, p) for n, p in rendered.context if n != df.PEX_NAME]
    digests = [(n, view.digest(p)[0]) for n, p in files]
    if any(n == df.PEX_NAME for n, _ in rendered.context):
        # the PEX is reproducible: what decides its bytes stands in for them in the tag
        digests.append((df.PEX_NAME, df.key_of(_pex_fingerprint(env, view))))
    tag = df.content_tag(rendered.base, rendered.dockerfile, digests, rendered.build_args, rendered.platforms)
    registry = img.get("registry") or view.cfg.registry
    name = img.get("name") or env.name
    uri = f"{registry.rstrip('/')}/{name}:{tag}" if registry else f"{name}:{tag}"
    push = opts.get("push", bool(registry))
    if push and not registry:
        raise UserError(f"Field {FIELD}.push is true, but `{env.name}`'s image names no registry and `registry` is not set")
    params = {
        "mode": "build",
        "uri": uri,
        "tag": tag,
        "base": rendered.base,
        "dockerfile": rendered.dockerfile,
        "build_args": [list(a) for a in rendered.build_args],
        "platforms": list(rendered.platforms),
        "push": push,
        "pex": df.PEX_NAME if len(digests) > len(files) else None,
        # how the engine builds it (`docker.network`, `docker.builder`)
        "network": opts["network"],
        "builder": opts["builder"],
    }
    if rendered.secrets:
        # where each BuildKit secret is read at build time (never its value)
        params["secrets"] = [list(s) for s in rendered.secrets]
    for w in rendered.warnings:
        view.warn(w)
    return {"mode": "build", "uri": uri, "tag": tag, "files": files, "params": params}


def applies(env, view) -> bool:
    return env.image is not None


def deps(env, view) -> tuple[str, ...]:
    return (f"pex:{env.name}",) if _uses_pex(env, view, options(view.cfg)) else ()


def inputs(env, view) -> Inputs:
    p = image_facts(env, view)
    return Inputs(files=tuple(p["files"]), params=p["params"], deps=deps(env, view))


def describe(env, view) -> dict:
    try:
        p = image_facts(env, view)
    except UserError as exc:
        return {"uri": None, "image_error": str(exc)}
    out = {"uri": p["uri"], "image_mode": p["mode"]}
    if p["mode"] == "build":
        out["tag"] = p["tag"]
    return out


# -- running -------------------------------------------------------------------
def _write_context(req: Request, dest_dir: Path) -> Path:
    """The deterministic artifact: Dockerfile + context/<name> for every context file."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dockerfile = dest_dir / "Dockerfile.rendered"
    dockerfile.write_text(req.params["dockerfile"], encoding="utf-8")
    members = [("Dockerfile", str(dockerfile), None)]
    members += [(f"context/{f.name}", f.path, f.digest) for f in req.files]
    if req.params.get("pex"):
        pex_result = req.deps[f"pex:{req.env.name}"]
        members.append((f"context/{req.params['pex']}", pex_result.path, None))
    out = dest_dir / ARTIFACT
    with open(out, "wb") as f:
        write_tar_gz(f, members)
    return out


def _meta(p: dict, image_digest: str | None, image_id: str | None, built: bool) -> dict:
    meta = {
        "uri": p["uri"],
        "tag": p.get("tag"),
        "image_digest": image_digest,
        "pinned": publish.pinned(p["uri"], image_digest),
        "image_id": image_id,
        "pushed": bool(p.get("push")) and image_digest is not None,
        "docker_build": built,
        "platforms": p.get("platforms", []),
    }
    if image_digest or image_id:
        meta["digest"] = image_digest or image_id
    return meta


def remote_check(req: Request):
    p = req.params
    if p["mode"] != "build" or not p["push"]:
        return None
    digest = docker_engine.manifest_digest(req.session, p["uri"])
    if digest is None:
        return None
    req.log(f"{p['uri']} is already in the registry ({digest}); not building")
    art = _write_context(req, req.workdir)  # the engine stores it
    return Produced(files=((ARTIFACT, art),), meta=_meta(p, digest, None, False))


def run(req: Request) -> Produced:
    p = req.params
    if p["mode"] == "reference":
        digest = docker_engine.manifest_digest(req.session, p["uri"])
        req.log(f"{req.target}: a reference, nothing to build: {p['uri']}" + (f" ({digest})" if digest else ""))
        return Produced(meta=_meta(p, digest, None, False))
    art = _write_context(req, req.workdir)
    stage = req.workdir / "stage"
    with tarfile.open(art, "r:gz") as tar:
        extract_all(tar, stage)
    context_dir = stage / "context"
    context_dir.mkdir(exist_ok=True)
    builder = req.session.builder(p["builder"])
    if not builder.buildkit:
        dockerfile = stage / "Dockerfile"
        dockerfile.write_text(df.without_cache_mounts(dockerfile.read_text(encoding="utf-8")), encoding="utf-8")
    if len(p["platforms"]) > 1:
        req.log(f"note: the spec names platforms {', '.join(p['platforms'])}; this engine builds for its own platform only")
    uri = p["uri"]
    # envs sharing a spec share its action key: the engine runs it once
    built = False
    if docker_engine.image_exists(uri, builder):
        # the tag is a content hash: an image with it is this image (another env
        # sharing the spec, or an earlier run whose cache entry is gone)
        req.log(f"{uri} is already in the engine; not building")
    else:
        labels = {"org.flyte-build.tag": p["tag"]}
        docker_engine.build(context_dir, stage / "Dockerfile", uri, network=p["network"] or None, builder=builder, log=req.log,
                            labels=labels, secrets=[tuple(s) for s in p.get("secrets") or ()], where=f"`{req.env.name}`")
        built = True
    image_id, size = docker_engine.image_facts(uri, builder)
    shutil.rmtree(stage, ignore_errors=True)
    # not pushed here: `deliver` pushes, every run, outside the cache
    return Produced(files=((ARTIFACT, art),), meta={**_meta(p, None, image_id, built), "image_size": size})


RULE = Rule(
    kind="image",
    version=VERSION,
    description="the container image derived from the environment's flyte.Image, tagged by content",
    inputs=inputs,
    run=run,
    applies=applies,
    deps=deps,
    describe=describe,
    remote_check=remote_check,
    deliver=lambda req, meta: publish.deliver(req, meta, build=run),
    session=docker_engine.Docker,
    outputs=((ARTIFACT,), ()),
    needs_signature=True,
    artifacts=True,
)
