"""check:<env> against the real Docker engine: every task of sample_monorepo loads
from its bundle in its image under flyte's runtime, and a missing package fails
naming the env, the task and the exception.

The session's run of `build 'check:*'` on a temp copy of sample_monorepo
(conftest's `checked_sample`: its images share one flyte-install layer on the
engine), then a cached rerun, the dry run's report, and two failures on copies.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.support.cli import copy_checked, flyte_build
from tests.support.docker_env import BASE_IMAGE

# the first test also sets up the session's checked sample (images and checks, cold)
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

ENVS = ["inference", "ml_training", "ml_training_large", "preprocessing", "reporting", "visualization"]
TIMEOUT = 1500


def _run(repo: Path, cache: Path, *args: str):
    return flyte_build(*args, cwd=repo, cache=cache, timeout=TIMEOUT)


def _records(run) -> dict:
    assert run.rc == 0, f"exit {run.rc}\n{run.err[-4000:]}"
    return {t["target"]: t for t in run.json()["targets"]}


@pytest.fixture(scope="module")
def state(checked_sample):
    return checked_sample


def test_every_env_of_the_sample_passes_its_check(state) -> None:
    first = state["first"]
    assert sorted(t for t in first if t.startswith("check:")) == [f"check:{e}" for e in ENVS]
    for env in ENVS:
        r = first[f"check:{env}"]
        assert r["status"] == "built" and r["check"] == "passed", r
        assert r["flyte"] == __import__("importlib.metadata").metadata.version("flyte")  # the SDK that serialized
        assert r["image"] == first[f"image:{env}"]["uri"]
        assert r["cwd"] == "/home/flyte"  # flyte's working directory
    # flyte's builder: the runtime image (and a Dockerfile from it) runs as `flyte`,
    # layers added on top of it run as root
    assert first["check:inference"]["user"] == first["check:reporting"]["user"] == "flyte"
    assert first["check:preprocessing"]["user"] == "root"
    assert first["check:visualization"]["tasks"] == ["visualization.report_pipeline"]
    print(f"\ncheck:* cold (images included): {state['seconds']:.1f} s")


def test_an_unchanged_env_costs_nothing(state) -> None:
    started = time.perf_counter()
    again = _records(_run(state["repo"], state["cache"], "build", "check:*", "--json"))
    seconds = time.perf_counter() - started
    for env in ENVS:
        assert again[f"check:{env}"]["status"] == "cached", again[f"check:{env}"]
        assert again[f"check:{env}"]["digest"] == state["first"][f"check:{env}"]["digest"]
    print(f"\ncheck:* cached: {seconds:.1f} s")


def test_dry_run_reports_each_check_and_deploy_depends_on_it(state) -> None:
    plan = _run(state["repo"], state["cache"], "deploy", "--dry-run", "--json")
    assert plan.rc == 0, plan.err
    assert {t["env"]: t["check"] for t in plan.json()["targets"]} == {e: "passed" for e in ENVS}
    off = _run(state["repo"], state["cache"], "deploy", "--dry-run", "--json", "--no-check")
    assert {t["check"] for t in off.json()["targets"]} == {"off"}
    graph = _run(state["repo"], state["cache"], "graph", "--format", "json")
    assert graph.rc == 0, graph.err
    doc = graph.json()
    edges = doc.get("edges", doc)
    text = json.dumps(edges)
    assert "check:preprocessing" in text and "deploy:preprocessing" in text


def test_a_package_the_image_lacks_fails_naming_env_task_and_module(state) -> None:
    repo = copy_checked(state, "lacks-six")
    tasks = repo / "services/preprocessing/tasks.py"
    text = tasks.read_text()
    # the code now imports six at module level; the image no longer installs it
    text = text.replace("import flyte\n", "import flyte\nimport six  # noqa: F401\n", 1)
    text = text.replace('.with_pip_packages("six==1.17.0")', "")
    tasks.write_text(text)
    out = _run(repo, state["cache"], "build", "check:preprocessing")
    assert out.rc == 1, out.err
    # stderr's one line names the env, a task that does not load and why; the
    # target's log (whose path that line gives) holds every task's failure
    line = next(ln for ln in out.err.splitlines() if "check:preprocessing failed (env `preprocessing`)" in ln and "full log" in ln)
    assert re.search(r"task preprocessing\.(clean|make_series) does not load in image .*No module named 'six'", line), line
    assert "(and 1 more)" in line and "Traceback" not in out.err
    log = Path(re.search(r"\(full log: ([^)]+)\)", line).group(1)).read_text()
    for task in ("preprocessing.clean", "preprocessing.make_series"):
        assert f"task {task} does not load in image" in log
    assert "ModuleNotFoundError: No module named 'six'" in log


def test_a_plain_reference_without_flyte_fails_the_same_way(state) -> None:
    # inference's Image.from_ref_name("base") pointed at the bare Python base
    out = _run(state["repo"], state["cache"], "--image", f"base={BASE_IMAGE}", "build", "check:inference")
    assert out.rc == 1, out.err
    assert "check:inference failed (env `inference`)" in out.err
    assert "`a0` is not on PATH in image flyte-build-test/python:3.11" in out.err


CONTAINERS = '''import flyte
from flyte.extras import ContainerTask

greet = ContainerTask(name="greet", image="{image}", inputs={{"name": str}}, outputs={{"greeting": str}},
                      command=["{program}", "-c", "printf 'hello %s' {{{{.inputs.name}}}} > /var/outputs/greeting"])

container_env = flyte.TaskEnvironment.from_task("container_env", greet)
'''


def test_a_container_task_checks_its_program_in_its_own_image(tmp_path) -> None:
    """A ContainerTask is not loaded by flyte's resolver: its check finds the
    command's program in its image, and a program the image lacks fails naming the task."""
    from tests.support.docker_env import ensure_base_image

    ensure_base_image()
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text('[project]\nname = "c"\nversion = "0"\n')
    (repo / "containers.py").write_text(CONTAINERS.format(image=BASE_IMAGE, program="/bin/sh"))
    run = _run(repo, tmp_path / "cache", "build", "check:container_env", "--json")
    rec = _records(run)["check:container_env"]
    assert rec["check"] == "passed" and rec["tasks"] == ["greet"] and rec["image"] == BASE_IMAGE
    (repo / "containers.py").write_text(CONTAINERS.format(image=BASE_IMAGE, program="/usr/bin/no-such-tool"))
    out = _run(repo, tmp_path / "cache", "build", "check:container_env", "--json")
    assert out.rc == 1, out.err
    err = next(t["error"] for t in out.json()["targets"] if t["target"] == "check:container_env")
    assert f"task greet runs /usr/bin/no-such-tool, which is not in image {BASE_IMAGE}" in err


def test_a_connector_task_needs_no_container(tmp_path) -> None:
    """A connector-style task runs no program of its own (no command; with SQL, no
    container at all: the backend's connector runs it): its check passes without
    starting a container, even for an image that cannot be pulled here."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text('[project]\nname = "w"\nversion = "0"\n')
    (repo / "warehouse.py").write_text(
        "import inspect\n\nimport flyte\nfrom flyte.extend import TaskTemplate\nfrom flyte.models import NativeInterface\n\n\n"
        "class Query(TaskTemplate):\n    def custom_config(self, sctx):\n        return {'table': 'events'}\n\n\n"
        "q = Query(name='count_rows', task_type='warehouse_query', image='127.0.0.1:9/nothing:1',\n"
        "          interface=NativeInterface({'day': (str, inspect.Parameter.empty)}, {}))\n"
        "env = flyte.TaskEnvironment.from_task('warehouse', q)\n")
    run = _run(repo, tmp_path / "cache", "build", "check:warehouse", "--json")
    rec = _records(run)["check:warehouse"]
    assert rec["check"] == "passed" and rec["tasks"] == ["count_rows"] and rec["flyte"] is None


def test_an_include_only_bundle_is_checked_like_any_bundle(tmp_path) -> None:
    """Copy style none with `include` files still ships a bundle (flyte's
    include-only bundle): the check mounts it, so check: depends on bundle:
    exactly when the env has one (the bundle kind's own answer)."""
    from tests.support.repos import env_module, make_repo

    T = "tool.hatch.build.targets.flyte"
    repo = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": env_module("a"), "pkg/b.py": env_module("b"),
                                          "conf/a.json": "{}"},
                     pyproject_extra=f'copy-style = "none"\n[{T}.envs.a]\ninclude = ["conf/a.json"]\n')
    edges = {t["target"]: t["deps"] for t in _run(repo, tmp_path / "cache", "graph", "--format", "json").json()["targets"]}
    assert "bundle:a" in edges and "bundle:a" in edges["check:a"]
    assert "bundle:b" not in edges and edges["check:b"] == ["image:b", "specs:b"]
