"""pex:<env>: reproducible bytes, and an image installing its requirements from the PEX."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.support.cli import records
from tests.support.docker_env import ensure_base_image, registry_available
from tests.support.requirements import require


def flyte_build(repo: Path, cache: Path, *args: str) -> dict:
    return records(*args, cwd=repo, cache=cache, timeout=900)


def test_pex_is_byte_identical_across_builds(repo: Path, tmp_path: Path) -> None:
    a = flyte_build(repo, tmp_path / "c1", "build", "pex:preprocessing", "--json", "--out", str(tmp_path / "o1"))
    b = flyte_build(repo, tmp_path / "c2", "build", "pex:preprocessing", "--json", "--out", str(tmp_path / "o2"))
    pa, pb = Path(a["pex:preprocessing"]["path"]), Path(b["pex:preprocessing"]["path"])
    assert a["pex:preprocessing"]["status"] == b["pex:preprocessing"]["status"] == "built"
    assert pa.read_bytes() == pb.read_bytes()
    assert a["pex:preprocessing"]["digest"] == "sha256:" + hashlib.sha256(pa.read_bytes()).hexdigest()
    # it runs and holds the requirement
    out = subprocess.run(["python", str(pa), "-c", "import six; print(six.__version__)"], capture_output=True, text=True)
    assert out.stdout.strip() == "1.17.0", out.stderr


@pytest.mark.docker
def test_image_installs_requirements_from_the_pex(repo: Path, tmp_path: Path) -> None:
    ensure_base_image()
    require(registry_available(), "no registry answers on 127.0.0.1:5000; run `bash .ci/provision.sh` as root")
    p = repo / "pyproject.toml"
    p.write_text(p.read_text().replace(
        'network = "host"', f'network = "host"\nrequirements-from = "pex"\nbuild-args = {{ TEST_SESSION = "{uuid.uuid4().hex}" }}'
    ))
    cache = tmp_path / "cache"
    planned = flyte_build(repo, cache, "targets", "--json")
    built = flyte_build(repo, cache, "build", "image:preprocessing", "--json")
    img = built["image:preprocessing"]
    assert img["status"] == "built" and img["uri"] == planned["image:preprocessing"]["uri"]
    assert built["pex:preprocessing"]["status"] == "built"  # the image depends on its PEX
    run = subprocess.run(
        ["docker", "run", "--rm", "--network", "host", img["uri"], "python", "-c",
         "import six, sys, importlib.metadata as m; print(six.__version__, sys.prefix, m.version('flyte'))"],
        capture_output=True, text=True, timeout=120,
    )
    # the PEX's wheels went into the runtime's venv, next to flyte (not over it)
    assert run.stdout.split() == ["1.17.0", "/opt/venv", version("flyte")], run.stderr
    import tarfile

    with tarfile.open(img["path"], "r:gz") as tar:
        dockerfile = tar.extractfile("Dockerfile").read().decode()
        assert "context/deps/requirements.pex" in tar.getnames()
    assert "COPY deps/requirements.pex" in dockerfile and "'six==1.17.0'" not in dockerfile
    assert "pip install --no-cache-dir --no-index --no-deps /tmp/pex-wheels/*.whl" in dockerfile
