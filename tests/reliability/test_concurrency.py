"""Concurrent builds of one repository sharing one cache all succeed with the
digests of a clean build and leave no corrupted entry.

The builds start from a cold cache, so they race on everything at once:
discovery results, stat caches, blobs and action entries of the same names.
"""

from __future__ import annotations

import random

import pytest

from tests.support.repos import Cli, Result, env_module, make_repo

pytestmark = pytest.mark.reliability("concurrent builds, one cache")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("concurrency")
    rng = random.Random(3)
    files: dict[str, str | bytes] = {"pkg/__init__.py": ""}
    extra = []
    for name in ("c1", "c2", "c3"):
        files[f"pkg/{name}.py"] = env_module(name, var=f"env_{name}")
        files[f"data/{name}.bin"] = rng.randbytes(1 << 20)
        extra.append(f'[tool.hatch.build.targets.flyte.envs.{name}]\ninclude = ["data/{name}.bin"]')
    root = make_repo(base / "repo", files, pyproject_extra="\n".join(extra))
    clean = Cli(root, base / "clean").build()
    clean.assert_ok()
    return root, clean.digests()


@pytest.mark.parametrize("n", [2, 4])
def test_builds_at_once_share_one_cache(repo, tmp_path, n):
    root, reference = repo
    cli = Cli(root, tmp_path / "shared-cache")
    procs = [cli.popen("build", "--json", "--jobs", "2") for _ in range(n)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        results.append(Result(p.returncode, out, err, ("build", "--json")))
    for r in results:
        r.assert_ok()
        assert r.digests() == reference, r.describe()
    ver = cli.verify()
    assert ver.rc == 0 and ver.json()["ok"], ver.describe()
    # and the cache they wrote serves the next build entirely
    again = cli.build()
    again.assert_ok()
    assert again.digests() == reference
    assert all(t["cached"] for t in again.json()["targets"])
