"""The provisioned Docker parts work: base image, builds with pip, registry pushes."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.support.docker_env import (
    BASE_IMAGE,
    REGISTRY,
    engine_available,
    ensure_base_image,
    manifest_digest,
    registry_available,
)
from tests.support.requirements import require

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def base_image() -> str:
    require(engine_available(), "no Docker engine answers `docker info`; run `bash .ci/provision.sh`")
    require(registry_available(), f"no registry answers on {REGISTRY}; run `bash .ci/provision.sh`")
    return ensure_base_image()


def test_base_image_runs_python_3_11(base_image):
    from python_on_whales import docker

    out = docker.run(
        base_image,
        ["python3", "-c", "import ssl, sys; print(sys.version_info[:2])"],
        remove=True,
        networks=["host"],
    )
    assert out.strip() == "(3, 11)"


def test_build_with_pip_and_push_to_local_registry(base_image, tmp_path):
    from python_on_whales import docker

    (tmp_path / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nRUN pip install six\n")
    repository, tag = "flyte-build-test/docker-env", uuid.uuid4().hex[:12]
    image = f"{REGISTRY}/{repository}:{tag}"
    try:
        docker.legacy_build(tmp_path, tags=[image], network="host")
        docker.run(image, ["python3", "-c", "import six"], remove=True, networks=["host"])

        docker.push(image)
        digest = manifest_digest(repository, tag)
        assert digest is not None and re.fullmatch(r"sha256:[0-9a-f]{64}", digest), digest
        # The registry serves exactly the manifest the engine pushed.
        assert f"{REGISTRY}/{repository}@{digest}" in docker.image.inspect(image).repo_digests
    finally:
        if docker.image.exists(image):
            docker.image.remove(image, force=True)
