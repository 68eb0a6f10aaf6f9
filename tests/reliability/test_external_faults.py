"""Outside parts that fail: the Docker engine, the registry, the control plane.

Each is a clear error (exit 1, the part named, no traceback), and nothing is
lost: the cache verifies afterwards and no failed result is recorded as done.
The shared cache's faults (unreachable, timing out, corrupt or half-written
objects) are in tests/test_shared_cache.py.
"""

from __future__ import annotations

import time

import pytest

from tests.support import servers
from tests.support.docker_env import client_available, engine_available
from tests.support.repos import Cli, make_repo
from tests.support.requirements import require

pytestmark = pytest.mark.reliability("outside parts down")

BUILT_IMAGE = """import flyte
env = flyte.TaskEnvironment(name="a", image=flyte.Image.from_debian_base(python_version=(3, 11), install_flyte=False).with_pip_packages("six==1.17.0"))

@env.task
async def t(x: int) -> int:
    return x
"""
URI_IMAGE = BUILT_IMAGE.replace(
    'flyte.Image.from_debian_base(python_version=(3, 11), install_flyte=False).with_pip_packages("six==1.17.0")', '"127.0.0.1:9/x/a:1"'
)


def _no_image_recorded(cli: Cli) -> None:
    ver = cli.verify()
    assert ver.rc == 0, ver.describe()
    again = cli.run("build", "--json", "image:*", timeout=120)
    assert not any(t["cached"] for t in again.json()["targets"] if t["target"].startswith("image:")), "a failed image was cached"


def test_docker_engine_down(tmp_path):
    # the engine is pointed at a socket nobody serves, but the client must exist to say so
    require(client_available(), "the docker command-line client")
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": BUILT_IMAGE})
    cli = Cli(root, tmp_path / "cache", env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    res = cli.run("build", "image:*", timeout=120)
    assert res.rc == 1, res.describe()
    assert "Traceback" not in res.err and "internal error" not in res.err, res.describe()
    assert "Cannot connect to the Docker daemon" in res.err + res.out, res.describe()
    _no_image_recorded(cli)


def test_registry_down(tmp_path):
    require(engine_available(), "a Docker engine")
    port = servers.free_port()
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": BUILT_IMAGE}, pyproject_extra=f'registry = "127.0.0.1:{port}"')
    cli = Cli(root, tmp_path / "cache")
    res = cli.run("build", "image:*", timeout=300)
    assert res.rc == 1, res.describe()
    assert "Traceback" not in res.err and "internal error" not in res.err, res.describe()
    assert f"127.0.0.1:{port}" in res.err + res.out, res.describe()
    _no_image_recorded(cli)


def _deploy(cli: Cli, endpoint: str, timeout: float = 180, *extra: str):
    return cli.run("--project", "p", "--domain", "development", "deploy", "--endpoint", endpoint, "--insecure", "--json",
                   "--no-check", *extra, timeout=timeout)


def test_control_plane_refuses(tmp_path):
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": URI_IMAGE})
    cli = Cli(root, tmp_path / "cache", env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    endpoint = f"dns:///127.0.0.1:{servers.free_port()}"
    res = _deploy(cli, endpoint)
    assert res.rc == 1, res.describe()
    assert "Traceback" not in res.err and "internal error" not in res.err, res.describe()
    doc = res.json()
    assert doc["failed"] == ["a"] and doc["deployed"] == []
    assert "Connection refused" in res.out + res.err
    # nothing was recorded as deployed: a second attempt tries again
    again = _deploy(cli, endpoint)
    assert again.rc == 1 and again.json()["failed"] == ["a"], again.describe()
    assert cli.verify().rc == 0


def test_control_plane_times_out(tmp_path):
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": URI_IMAGE})
    cli = Cli(root, tmp_path / "cache", env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    silent = servers.SilentServer()
    try:
        t0 = time.monotonic()
        res = _deploy(cli, "dns:///" + silent.url.removeprefix("http://"), 90, "--timeout", "5")
        elapsed = time.monotonic() - t0
    finally:
        silent.close()
    assert res.rc == 1, res.describe()
    assert "Traceback" not in res.err and "internal error" not in res.err, res.describe()
    assert res.json()["failed"] == ["a"]
    assert elapsed < 60
    assert "no answer from" in res.out + res.err
    assert cli.verify().rc == 0
