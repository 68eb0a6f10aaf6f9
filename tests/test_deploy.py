"""deploy:<env>: order, exactly-once, reproducible versions, the real wire protocol.

A small repository of six environments (a diamond: `top` reaches `base`
through `left` and `right`; `solo` stands alone) with URI images, so no
image is built. Real deploys go to the loopback control plane of
tests/support/controlplane.py (flyteidl2's servers, moto's S3).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import controlplane
from tests.support.cli import Run, copy_sample, flyte_build

IMG = "127.0.0.1:9/flyte-build-test/{}:1"  # references only: nothing listens on port 9

ENVS = {  # name -> depends_on
    "base": [], "mid": ["base"], "left": ["mid"], "right": ["mid", "base"], "top": ["left", "right"], "solo": [],
}


def write_repo(root: Path, cycle: bool = False) -> Path:
    (root / "svc").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "t"\nversion = "0"\n\n[tool.hatch.build.targets.flyte]\n')
    (root / "svc" / "__init__.py").write_text("")
    for name, deps in ENVS.items():
        imports = "".join(f"from svc.{d} import {d}_env\n" for d in deps)
        dep_list = ", ".join(f"{d}_env" for d in deps)
        lines = ["import flyte", imports,
                 f'{name}_env = flyte.TaskEnvironment(name="{name}", image="{IMG.format(name)}", depends_on=[{dep_list}])', "",
                 f"@{name}_env.task", f"async def {name}_one(x: int) -> int:", "    return x + 1", "",
                 f"@{name}_env.task", f"async def {name}_two(s: str) -> str:", "    return s", ""]
        (root / "svc" / f"{name}.py").write_text("\n".join(lines))
    if cycle:
        # base already sits under mid; make mid a dependency of base as well
        (root / "svc" / "cyc.py").write_text(
            "from svc.base import base_env\nfrom svc.mid import mid_env\nbase_env.add_dependency(mid_env)\n"
        )
    return root


def cli(root: Path, *args: str, cache: Path, seed: str = "0") -> Run:
    return flyte_build(*args, cwd=root, cache=cache, env={"PYTHONHASHSEED": seed, "AWS_ACCESS_KEY_ID": "testing",
                                                          "AWS_SECRET_ACCESS_KEY": "testing"})


def records(proc) -> list[dict]:
    assert proc.rc == 0, proc.err  # a dry run contacts nothing and must succeed
    return json.loads(proc.out)["targets"]


def assert_dependencies_first(order: list[str]) -> None:
    assert sorted(order) == sorted(ENVS), order  # each env exactly once
    for name, deps in ENVS.items():
        for d in deps:
            assert order.index(d) < order.index(name), (d, name, order)


def test_dry_run_plan_is_ordered_offline_and_reproducible(tmp_path):
    a = write_repo(tmp_path / "one" / "repo")
    b = write_repo(tmp_path / "elsewhere" / "deeper" / "copy")
    ra = records(cli(a, "deploy", "--dry-run", "--json", cache=tmp_path / "c1", seed="1"))
    rb = records(cli(b, "deploy", "--dry-run", "--json", cache=tmp_path / "c2", seed="987"))
    assert_dependencies_first([r["env"] for r in ra])
    assert [(r["env"], r["version"], r["bundle"]) for r in ra] == [(r["env"], r["version"], r["bundle"]) for r in rb]
    assert [r["tasks"] for r in ra] == [r["tasks"] for r in rb]  # the full specs, byte for byte
    for r in ra:
        assert r["kind"] == "deploy" and r["image"] == IMG.format(r["env"])
        assert r["bundle"].startswith("sha256:")
        names = sorted(t["name"] for t in r["tasks"])
        assert names == [f"{r['env']}.{r['env']}_one", f"{r['env']}.{r['env']}_two"]
        for t in r["tasks"]:
            tt = t["spec"]["task_template"]
            assert tt["id"]["version"] == r["version"]
            assert tt["container"]["image"] == r["image"]
            assert tt["metadata"]["code_bundle_uri"].endswith(r["bundle"].split(":")[1] + ".tar.gz")
    # a change to one env's code changes its version and its dependents', nothing else
    (a / "svc" / "mid.py").write_text((a / "svc" / "mid.py").read_text() + "\n# edited\n")
    rc = {r["env"]: r["version"] for r in records(cli(a, "deploy", "--dry-run", "--json", cache=tmp_path / "c1"))}
    old = {r["env"]: r["version"] for r in ra}
    changed = sorted(n for n in old if old[n] != rc[n])
    assert "mid" in changed and "base" not in changed and "solo" not in changed
    # --version overrides the content key everywhere
    rv = records(cli(a, "deploy", "--dry-run", "--json", "--version", "v9", cache=tmp_path / "c1"))
    assert {t["spec"]["task_template"]["id"]["version"] for r in rv for t in r["tasks"]} == {"v9"}
    # the Python API's plan takes it the same way (one route to the plan and the rule: DeployParams)
    import flyte_build

    api_plan = flyte_build.plan(root_dir=a, version="v9", cache_dir=tmp_path / "c1")
    assert [(e.env, e.version) for e in api_plan.envs] == [(r["env"], "v9") for r in rv]
    assert {t.spec["task_template"]["id"]["version"] for e in api_plan.envs for t in e.tasks} == {"v9"}


def test_dry_run_selection_and_bad_input(tmp_path):
    root = write_repo(tmp_path / "repo")
    one = records(cli(root, "deploy", "--dry-run", "--json", "svc/left.py", "left_env", cache=tmp_path / "c"))
    assert [r["env"] for r in one] == ["base", "mid", "left"]
    tgt = records(cli(root, "deploy", "--dry-run", "--json", "deploy:right", cache=tmp_path / "c"))
    assert [r["env"] for r in tgt] == ["base", "mid", "right"]
    none = cli(root, "--copy-style", "none", "deploy", "--dry-run", cache=tmp_path / "c")
    assert none.rc == 2 and "copy style none" in none.err and "--version" in none.err


def test_cycle_from_add_dependency_is_an_error_before_anything(tmp_path):
    root = write_repo(tmp_path / "repo", cycle=True)
    proc = cli(root, "deploy", "--dry-run", cache=tmp_path / "c")
    assert proc.rc == 2
    assert "depends_on cycle: base → mid → base" in proc.err


def test_sample_monorepo_dry_run_order(tmp_path):
    root = tmp_path / "sample"
    copy_sample(root)
    recs = records(cli(root, "deploy", "--dry-run", "--json", cache=tmp_path / "c"))
    order = [r["env"] for r in recs]
    assert len(order) == len(set(order)) == 6
    assert order.index("preprocessing") < order.index("ml_training") < order.index("visualization")
    assert order.index("preprocessing") < order.index("ml_training_large")


def deploy_args(cp) -> list[str]:
    # the images are references to nothing (port 9): these tests are about deploys, not checks
    return ["--project", "proj", "--domain", "development", "deploy", "--endpoint", cp.endpoint, "--insecure", "--json", "--no-check"]


def deployed_envs(cp, since: int = 0) -> list[str]:
    """Environments in the order their first task reached DeployTask."""
    seen: list[str] = []
    for m, req in cp.calls[since:]:
        if m == "DeployTask" and req.spec.environment.name not in seen:
            seen.append(req.spec.environment.name)
    return seen


@pytest.mark.servers
def test_real_deploy_order_versions_locations_and_incremental(tmp_path, control_plane):
    cp = control_plane
    root = write_repo(tmp_path / "repo")
    plan = {r["env"]: r for r in records(cli(root, "deploy", "--dry-run", "--json", cache=tmp_path / "c"))}
    proc = cli(root, *deploy_args(cp), cache=tmp_path / "c")
    assert proc.rc == 0, proc.err
    # dependencies first: an env's first task arrives after every task of its dependencies
    calls = [(req.spec.environment.name, req) for m, req in cp.calls if m == "DeployTask"]
    for name, deps in ENVS.items():
        first = min(i for i, (n, _) in enumerate(calls) if n == name)
        for d in deps:
            assert max(i for i, (n, _) in enumerate(calls) if n == d) < first
    # exactly once per task
    names = [req.task_id.name for _, req in calls]
    assert sorted(names) == sorted(f"{e}.{e}_{k}" for e in ENVS for k in ("one", "two"))
    s3 = cp.s3()
    for name, req in calls:
        tt = req.spec.task_template
        assert req.task_id.version == tt.id.version == plan[name]["version"]  # the dry run's version
        assert (req.task_id.project, req.task_id.domain) == ("proj", "development")
        assert tt.container.image == IMG.format(name)
        bucket, key = tt.metadata.code_bundle_uri.removeprefix("s3://").split("/", 1)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert "sha256:" + hashlib.sha256(body).hexdigest() == plan[name]["bundle"]
        assert "--tgz" in tt.container.args and tt.metadata.code_bundle_uri in tt.container.args
    # unchanged: nothing is uploaded or registered again
    n = len(cp.calls)
    again = cli(root, *deploy_args(cp), cache=tmp_path / "c")
    assert again.rc == 0, again.err
    doc = json.loads(again.out)
    assert sorted(doc["unchanged"]) == sorted(ENVS) and doc["deployed"] == []
    assert cp.calls[n:] == []
    # --force redeploys (the backend answers ALREADY_EXISTS, which is fine)
    forced = cli(root, *deploy_args(cp), "--force", "deploy:solo", cache=tmp_path / "c")
    assert forced.rc == 0 and json.loads(forced.out)["deployed"] == ["solo"]


@pytest.mark.servers
def test_failed_env_skips_dependents_and_rerun_deploys_the_rest(tmp_path, control_plane):
    cp = control_plane
    cp.fail_envs.add("mid")
    root = write_repo(tmp_path / "repo")
    proc = cli(root, *deploy_args(cp), cache=tmp_path / "c")
    assert proc.rc == 1
    doc = json.loads(proc.out)
    assert sorted(doc["deployed"]) == ["base", "solo"]
    assert doc["failed"] == ["mid"]
    assert sorted(doc["skipped"]) == ["left", "right", "top"]
    assert not {"left", "right", "top"} & set(deployed_envs(cp))
    # the fault clears: a rerun deploys only what is missing
    cp.fail_envs.clear()
    n = len(cp.calls)
    rerun = cli(root, *deploy_args(cp), cache=tmp_path / "c")
    assert rerun.rc == 0, rerun.err
    doc = json.loads(rerun.out)
    assert sorted(doc["deployed"]) == ["left", "mid", "right", "top"]
    assert sorted(doc["unchanged"]) == ["base", "solo"]
    assert deployed_envs(cp, n)[0] == "mid"


@pytest.mark.servers
def test_changed_since_deploys_only_affected_envs_and_leaves_dependencies_alone(tmp_path, control_plane):
    # a fresh cache, so no deploy record says the dependencies are unchanged:
    # only --changed-since can keep them from being registered again
    from tests.support.gitrepo import GIT_ENV

    cp = control_plane
    root = write_repo(tmp_path / "repo")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT_ENV}, check=True, capture_output=True)
    (root / "svc" / "left.py").write_text((root / "svc" / "left.py").read_text() + "\n# edited\n")
    plan = json.loads(cli(root, "deploy", "--dry-run", "--json", "--changed-since", "HEAD", cache=tmp_path / "c").out)
    assert plan["order"] == ["left", "top"] and plan["left_out"] == ["base", "mid", "right"]
    proc = cli(root, *deploy_args(cp), "--changed-since", "HEAD", cache=tmp_path / "c")
    assert proc.rc == 0, proc.err
    doc = json.loads(proc.out)
    assert doc["deployed"] == ["left", "top"]
    assert doc["unchanged"] == doc["left_out"] == ["base", "mid", "right"]
    assert deployed_envs(cp) == ["left", "top"]  # the left-out dependencies were never contacted
    assert not [m for m, req in cp.calls if m == "CreateUploadLocation" and req.filename.split(".")[0] not in
                {r["bundle"].split(":")[1] for r in plan["targets"]}]
    # the versions are the dry run's: the dependencies' images went into them
    assert {req.spec.environment.name: req.task_id.version for m, req in cp.calls if m == "DeployTask"} == \
        {r["env"]: r["version"] for r in plan["targets"]}
