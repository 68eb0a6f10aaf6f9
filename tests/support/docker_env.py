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
