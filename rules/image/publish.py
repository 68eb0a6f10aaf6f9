"""Publishing an image: the image kind's `deliver` step, outside the cache.

The image's cacheable action builds it (or finds its tag in the registry); it
never pushes. This step runs after the action on every run, hit or miss, and
is never stored as a cache entry: a pushed image lives in the registry, so the
registry is asked each time. A tag it holds is published already (its digest
is taken from the registry); else the local engine's image is pushed (built
again first from the action's declared inputs when the engine no longer has
it: the tag is a content hash, so that is the same image). The
record gains `image_digest`, `pinned` and `pushed`, and the image's digest --
what its dependents (check, deploy) are keyed by -- becomes the registry's.
"""

from __future__ import annotations

from typing import Callable

from flyte_build.rule_api import Request

from . import docker_engine


def pinned(uri: str, digest: str | None) -> str | None:
    """`uri`'s repository at `digest` (name@sha256:...), what a deploy registers."""
    if not digest:
        return None
    host, repo, _ = docker_engine.split_uri(uri)
    return f"{host}/{repo}@{digest}" if host else f"{repo}@{digest}"


def deliver(req: Request, meta: dict, build: Callable[[Request], object]) -> dict:
    """Push the built image unless the registry holds its tag; the fields its record
    gains. `build(req)` is the action's build, for an image the engine lost."""
    p = req.params
    if p["mode"] != "build" or not p["push"]:
        return {}
    docker, uri = req.session, p["uri"]
    digest = docker_engine.manifest_digest(docker, uri)
    if digest is None:
        builder = docker.builder(p["builder"])
        if not docker_engine.image_exists(uri, builder):
            req.log(f"{uri} is neither in the registry nor in the engine (removed since it was built); building it again")
            build(req)
        digest = docker_engine.push(docker, uri, builder, req.log)
    fields = {"image_digest": digest, "pinned": pinned(uri, digest), "pushed": digest is not None}
    if digest:
        fields["digest"] = digest
    return fields
