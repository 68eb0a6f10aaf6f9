"""The Docker engine, local registry and base image the docker tests use.

`.ci/provision.sh` sets them up (CI runs it; run it yourself as root with
`bash .ci/provision.sh`): a dockerd without a bridge network, so builds and
runs use `--network host`; a registry on 127.0.0.1:5000, which the engine
treats as insecure; and `BASE_IMAGE`, an offline Debian 12 Python 3.11 image
(no base image can be pulled) whose pip reaches PyPI through the host's CA
bundle and accepts `pip install` into the system Python.

Tests call `require(engine_available(), ...)` and friends, or take the base
image from `ensure_base_image()`, so a machine without these parts skips them
and CI (`FLYTE_BUILD_TEST_STRICT=1`) fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request

from tests.support.requirements import require

BASE_IMAGE = "flyte-build-test/python:3.11"
REGISTRY = "127.0.0.1:5000"
REGISTRY_BASE_IMAGE = f"{REGISTRY}/flyte-build/base:py3.11"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"

_PROVISION_HINT = "run `bash .ci/provision.sh` as root"

# The registry is on loopback: never send its requests through an http_proxy.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _docker(*args: str, timeout: float) -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        result = subprocess.run([docker, *args], capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def client_available() -> bool:
    """Whether the `docker` command-line client is installed (python-on-whales drives it)."""
    return shutil.which("docker") is not None


def engine_available(timeout: float = 5.0) -> bool:
    """Whether `docker info` answers within `timeout` seconds."""
    return _docker("info", timeout=timeout)


def registry_available(addr: str = REGISTRY, timeout: float = 3.0) -> bool:
    """Whether a registry answers `GET http://ADDR/v2/`."""
    try:
        with _opener.open(f"http://{addr}/v2/", timeout=timeout) as response:
            return response.status == 200
    except OSError:  # URLError and HTTPError included
        return False


def image_present(name: str, timeout: float = 10.0) -> bool:
    """Whether the engine has the image `name` locally."""
    return _docker("image", "inspect", name, timeout=timeout)


def manifest_digest(repository: str, tag: str, addr: str = REGISTRY) -> str | None:
    """The `Docker-Content-Digest` the registry reports for REPOSITORY:TAG, or None."""
    request = urllib.request.Request(
        f"http://{addr}/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_V2}
    )
    try:
        with _opener.open(request, timeout=10) as response:
            return response.headers.get("Docker-Content-Digest")
    except OSError:  # URLError and HTTPError included
        return None


def ensure_base_image() -> str:
    """Return `BASE_IMAGE`; skip (or, strict, fail) the test if it or the engine is missing."""
    require(engine_available(), f"no Docker engine answers `docker info`; {_PROVISION_HINT}")
    require(image_present(BASE_IMAGE), f"base image {BASE_IMAGE} is missing; {_PROVISION_HINT}")
    return BASE_IMAGE


# -- the flyte runtime image ---------------------------------------------------
RUNTIME_IMAGE = f"{REGISTRY}/flyte-build/runtime:py3.11"


def runtime_dockerfile(base: str = BASE_IMAGE) -> str:
    """flyte-build's own rendering of flyte's released runtime image for the
    installed flyte, on `base`: the same lines every `from_debian_base()` image of
    sample_monorepo starts with, so the engine shares their layers."""
    from importlib.metadata import version

    from flyte_build.engine.rulesets import builtin

    df = builtin("image.dockerfile")

    return "\n".join([f"FROM {base}", *df.runtime_recipe(version("flyte"), "light")]) + "\n"


def _build(dockerfile: str, tag: str, timeout: float = 900) -> None:
    subprocess.run(
        ["/usr/bin/docker", "build", "--network", "host", "--tag", tag, "-"],
        input=dockerfile.encode(), env={**os.environ, "DOCKER_BUILDKIT": "1"},
        capture_output=True, timeout=timeout, check=True,
    )


def ensure_runtime_image() -> str:
    """Push flyte's runtime image for the installed flyte as `RUNTIME_IMAGE` (what
    sample_monorepo's `images.base` and reporting's Dockerfile name), unless the
    registry holds exactly it; returns `RUNTIME_IMAGE`."""
    ensure_base_image()
    require(registry_available(), f"no registry answers on {REGISTRY}; {_PROVISION_HINT}")
    import hashlib

    text = runtime_dockerfile()
    local = f"flyte-build-test/runtime:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if not image_present(local):
        _build(text, local)
    repo, tag = RUNTIME_IMAGE.split("/", 1)[1].rsplit(":", 1)
    remote = manifest_digest(repo, tag)
    pushed = subprocess.run(["docker", "image", "inspect", "-f", "{{join .RepoDigests \" \"}}", local],
                            capture_output=True, text=True, timeout=30).stdout.split()
    if remote is None or f"{RUNTIME_IMAGE.rsplit(':', 1)[0]}@{remote}" not in pushed:
        subprocess.run(["docker", "tag", local, RUNTIME_IMAGE], check=True, timeout=30)
        subprocess.run(["docker", "push", RUNTIME_IMAGE], check=True, capture_output=True, timeout=600)
    return RUNTIME_IMAGE


def session_image(base: str, name: str) -> str:
    """`base` plus one layer holding a fresh id, so the engine's layer cache has
    nothing built on it and builds FROM it are really cold (BuildKit keys its
    cache on layer contents: a new label or tag alone would not do). `name`
    prefixes the tag. The copy and every image built FROM it are removed when the
    session ends (tests/support/session_images.py)."""
    import uuid

    from tests.support import session_images

    session = uuid.uuid4().hex[:12]
    tag = f"{name}-session/base:{session}"
    user = subprocess.run(["docker", "image", "inspect", "-f", "{{.Config.User}}", base], capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()
    # the copy runs as the base does (flyte's runtime image runs as `flyte`)
    back = f"USER {user}\n" if user else ""
    # the owner label, inherited by every image built FROM the copy, is how the session's end
    # finds exactly the images this session made (tests/support/session_images.py)
    _build(f"FROM {base}\nUSER root\nRUN echo {session} > /etc/flyte-build-test-session\n"
           f'LABEL {session_images.LABEL}="{session_images.owner()}"\n{back}', tag, timeout=300)
    return tag


if __name__ == "__main__":  # python -m tests.support.docker_env: push the runtime image
    print(ensure_runtime_image())
