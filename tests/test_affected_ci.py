"""The GitHub Actions workflow of BUILD.md's "Monorepo CI", run for real.

The workflow is read out of BUILD.md itself, so the documented commands are
the tested ones: each job's `run:` steps go through bash in a git repository
of sample_monorepo, with the shared cache on a real S3 API (moto's server),
`${{ ... }}` expressions filled in as GitHub would for a pull request, and
`$GITHUB_OUTPUT` collected between jobs. Only the main-branch deploy step is
not run (it needs a Flyte backend); its `--dry-run` twin is.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import servers
from tests.support.cli import flyte_build
from tests.support.gitrepo import GIT_ENV, GitRepo

BUILD_MD = Path(__file__).resolve().parents[1] / "BUILD.md"
pytestmark = pytest.mark.servers


def workflow() -> dict:
    text = BUILD_MD.read_text()
    section = text.split("## Monorepo CI", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    return yaml.safe_load(block)


def fill(script: str, values: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        expr = m.group(1).strip()
        assert expr in values, f"the test does not know the expression {expr!r}"
        return values[expr]

    return re.sub(r"\$\{\{(.*?)\}\}", sub, script)


def run_job(job: dict, cwd: Path, env: dict, values: dict[str, str], tmp: Path) -> dict[str, str]:
    """Run a job's `run:` steps (skipping main-only ones); its $GITHUB_OUTPUT as a dict."""
    out = tmp / f"output-{len(list(tmp.glob('output-*')))}"
    out.write_text("")
    for step in job["steps"]:
        if "run" not in step or "refs/heads/main" in str(step.get("if", "")):
            continue
        if step["run"].startswith("pip install"):
            continue  # flyte-build is installed (editable) in this interpreter
        script = fill(step["run"], values)
        proc = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=cwd, env={**env, "GITHUB_OUTPUT": str(out)},
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"step failed:\n{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if line)


def test_the_documented_workflow_on_sample_monorepo(tmp_path):
    endpoint = servers.s3_bucket("my-team-ci")
    repo = GitRepo.create(tmp_path / "repo", tmp_path / "cache-affected")
    # a pull request: one commit changing a library only inference imports
    repo.git("checkout", "-q", "-b", "feature")
    repo.append("libs/mlkit/serving.py", "\n# serve faster\n")
    repo.commit("faster serving")

    # `flyte-build` on PATH runs this interpreter's flyte_build
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "flyte-build"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m flyte_build "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    wf = workflow()
    base_env = {
        **os.environ, **GIT_ENV, **servers.S3_ENV,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "AWS_ENDPOINT_URL": endpoint, "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1", "RUNNER_TEMP": str(tmp_path),
        **{k: str(v) for k, v in wf.get("env", {}).items()},
    }
    base_env.pop("FLYTE_BUILD_DEBUG", None)
    assert base_env["FLYTE_BUILD_CACHE"].startswith("s3://")

    # every runner starts with an empty local cache
    def runner(name: str) -> dict:
        return {**base_env, "FLYTE_BUILD_CACHE_DIR": str(tmp_path / f"runner-{name}")}

    values = {"github.event.pull_request.base.sha || github.event.before": repo.base}
    outputs = run_job(wf["jobs"]["affected"], repo.root, runner("affected"), values, tmp_path)
    assert outputs["base"] == repo.base and outputs["any"] == "true"
    matrix = json.loads(outputs["matrix"])
    assert matrix == {"include": [{"env": "inference"}, {"env": "reporting"}]}
    affected = json.loads((tmp_path / "affected.json").read_text())
    assert {t["target"]: t["file"] for t in affected["targets"]} == {
        "bundle:inference": "libs/mlkit/serving.py", "bundle:reporting": "libs/mlkit/serving.py",
        "specs:inference": "libs/mlkit/serving.py",  # the module is in inference's import closure
        # a check loads the env's tasks from its bundle, so it reruns when the bundle changes
        "check:inference": "libs/mlkit/serving.py", "check:reporting": "libs/mlkit/serving.py",
        "deploy:inference": "libs/mlkit/serving.py", "deploy:reporting": "libs/mlkit/serving.py",
    }

    needs = {f"needs.affected.outputs.{k}": v for k, v in outputs.items()}
    for entry in matrix["include"]:
        env = entry["env"]
        run_job(wf["jobs"]["build"], repo.root, runner(env), {**values, **needs, "matrix.env": env}, tmp_path)
        built = json.loads((tmp_path / "build.json").read_text())
        # the image is not affected by a library edit: only the bundle builds
        assert [(t["target"], t["status"]) for t in built["targets"]] == [(f"bundle:{env}", "built")]
        # a second runner with an empty local cache gets it from the shared S3 cache
        run_job(wf["jobs"]["build"], repo.root, runner(f"{env}-again"), {**values, **needs, "matrix.env": env}, tmp_path)
        again = json.loads((tmp_path / "build.json").read_text())
        assert [(t["target"], t["status"], t.get("source")) for t in again["targets"]] == [(f"bundle:{env}", "cached", "shared")]
        assert again["targets"][0]["digest"] == built["targets"][0]["digest"]

    # the deploy job on a pull request: the plan of exactly the affected envs' deploys
    env = runner("deploy")
    run_job(wf["jobs"]["deploy"], repo.root, env, {**values, **needs}, tmp_path)
    plan = flyte_build("--cache", base_env["FLYTE_BUILD_CACHE"], "deploy", "--changed-since", repo.base, "--dry-run", "--json",
                       cwd=repo.root, cache=Path(env["FLYTE_BUILD_CACHE_DIR"]), env=env, timeout=600)
    assert plan.rc == 0, plan.err
    assert plan.json()["order"] == ["inference", "reporting"]
