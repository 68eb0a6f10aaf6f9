"""End to end: a real deploy, then tasks run the way Flyte's backend runs them.

sample_monorepo (conftest's `checked_sample`: images built, checks passed) and
a small project with its tasks split across modules are deployed for real to
the local control plane (flyteidl2's servers; bundles to moto's S3). Then, for
every env, a task runs from the TaskSpec the control plane received: `docker
run` of its image with the spec's exact args, templates filled, inputs written
to S3 with flyte's converters, `--tgz` the bundle's real S3 URI
(tests/support/backend.py). Outputs are read back with flyte's loaders and
must equal the task run locally. Parents calling other envs enqueue their
children through the control plane's QueueService; each child runs from the
spec the parent enqueued, in its own env's image.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.support import controlplane
from tests.support.backend import Backend
from tests.support.cli import copy_checked, flyte_build
from tests.support.requirements import require

# containers start slowly on vfs storage; the first test may set up the checked sample too
pytestmark = [pytest.mark.docker, pytest.mark.servers, pytest.mark.timeout(1800)]

PROJECT, DOMAIN = "proj", "development"
TIMEOUT = 1800

# one top-level run per env that is not reached as a child; preprocessing and
# ml_training run as children of visualization's and ml_training_large's tasks
RUNS = [
    {"run": "viz", "name": "visualization.report_pipeline", "module": "services.visualization.tasks",
     "task": "report_pipeline", "kwargs": {"n": 6}},
    {"run": "large", "name": "ml_training_large.train_large", "module": "services.ml_training.large",
     "task": "train_large", "kwargs": {"values": [1.0, 3.0, -7.0, 7.5, 9.0, float("nan")]}},
    {"run": "infer", "name": "inference.predict", "module": "services.inference.tasks",
     "task": "predict", "kwargs": {"xs": [0.5, 2.0, -1.25]}},
    {"run": "report", "name": "reporting.summarize", "module": "services.reporting.tasks",
     "task": "summarize", "kwargs": {"values": [1.0, 2.5, 4.0]}},
]

CORPUS = {
    "pyproject.toml": """[project]
name = "corpus"
version = "0"

[tool.hatch.build.targets.flyte]
registry = "127.0.0.1:5000/flyte-build-e2e"

[tool.hatch.build.targets.flyte.docker]
base-images = { debian = "flyte-build-test/python:3.11" }
debian-recipe = "light"
""",
    "corpus/__init__.py": "",
    "corpus/env.py": """import flyte

env = flyte.TaskEnvironment(name="corpus", image=flyte.Image.from_debian_base(python_version=(3, 11)))
""",
    "corpus/text/__init__.py": "",
    "corpus/text/normalize.py": """def words(line: str) -> list[str]:
    return [w.strip(".,;:!?").lower() for w in line.split() if w.strip(".,;:!?")]
""",
    "corpus/tasks/__init__.py": "",
    "corpus/tasks/count.py": """from corpus.env import env
from corpus.text.normalize import words


@env.task
async def count_words(lines: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in lines:
        for w in words(line):
            counts[w] = counts.get(w, 0) + 1
    return dict(sorted(counts.items()))
""",
    "corpus/tasks/report.py": """from corpus.env import env
from corpus.tasks.count import count_words


@env.task
async def top_word(lines: list[str]) -> str:
    counts = await count_words(lines)
    return max(sorted(counts), key=lambda w: counts[w])
""",
}


@pytest.fixture(scope="module")
def cp():
    ok, why = controlplane.available()
    require(ok, why)
    plane = controlplane.ControlPlane.start()
    yield plane
    plane.stop()


def _deploy(repo: Path, cache: Path, cp) -> tuple[dict, float]:
    started = time.perf_counter()
    run = flyte_build("--project", PROJECT, "--domain", DOMAIN, "deploy", "--endpoint", cp.endpoint, "--insecure", "--json",
                      cwd=repo, cache=cache, timeout=TIMEOUT)
    assert run.rc == 0, f"deploy failed ({run.rc}):\n{run.err[-4000:]}"
    return run.json(), time.perf_counter() - started


def _specs(cp) -> dict:
    return {key[2]: spec for key, spec in cp.tasks.items()}


@pytest.fixture(scope="module")
def deployed(checked_sample, cp):
    repo = copy_checked(checked_sample, "e2e")
    doc, seconds = _deploy(repo, checked_sample["cache"], cp)
    print(f"\ndeploy of sample_monorepo (checks cached): {seconds:.1f} s")
    return {"repo": repo, "doc": doc}


def test_deploy_uploads_every_bundle_to_s3(deployed, cp, checked_sample) -> None:
    s3 = cp.s3()
    assert {rec["env"] for rec in deployed["doc"]["targets"]} == {b.split(":")[1] for b in checked_sample["first"] if b.startswith("bundle:")}
    for rec in deployed["doc"]["targets"]:
        assert rec["status"] == "deployed", rec
        bundle = checked_sample["first"][f"bundle:{rec['env']}"]
        hex_ = bundle["digest"].split(":")[1]
        key = f"{PROJECT}/{DOMAIN}/flyte-build/{hex_}.tar.gz"
        body = s3.get_object(Bucket=controlplane.BUCKET, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == hex_
    specs = _specs(cp)
    # each spec's --tgz is that real S3 URI
    for name, spec in specs.items():
        args = list(spec.task_template.container.args)
        assert args[args.index("--tgz") + 1].startswith(f"s3://{controlplane.BUCKET}/{PROJECT}/{DOMAIN}/flyte-build/"), name


def test_every_env_runs_a_task_as_the_backend_does(deployed, cp) -> None:
    specs = _specs(cp)
    backend = Backend(cp, PROJECT, DOMAIN)
    backend.serve_children()
    runs = [{**r, "spec": specs[r["name"]]} for r in RUNS]
    started = time.perf_counter()
    backend.run_tasks(deployed["repo"], runs, jobs=2)
    print(f"\nsample_monorepo task runs ({len(backend.actions)} containers): {time.perf_counter() - started:.1f} s")
    for r in runs:
        a = r["action"]
        assert a.proc.returncode == 0, f"{r['name']}: exit {a.proc.returncode}\n{a.proc.stderr[-3000:]}"
        assert r["remote"] == {"value": r["local"]}, (r["name"], r["remote"], r["local"])
    # the children the parents enqueued: recorded by the control plane, each run
    # from the enqueued spec in its own env's image, successfully
    children = {(a.run, a.task): a for a in backend.actions if a.parent}
    assert set(children) == {
        ("viz", "preprocessing.make_series"), ("viz", "ml_training.train"), ("viz", "preprocessing.clean"),
        ("large", "preprocessing.clean"),
    }, sorted(children)
    enqueued = {(req.action_id.run.name, req.task.spec.task_template.id.name) for req in cp.enqueued()}
    assert enqueued == set(children)
    for (run, task), a in children.items():
        assert a.proc.returncode == 0, f"{run}/{task}: {a.proc.stderr[-2000:]}"
        assert a.image == specs[task].task_template.container.image  # the child env's image, as deployed
    # the train child ran under the viz parent, and its own clean child under it
    parents = {a.task: a.parent for a in backend.actions if a.run == "viz" and a.parent}
    assert parents["ml_training.train"] == "a0" and parents["preprocessing.clean"] != "a0"


def test_a_project_with_tasks_across_modules_deploys_and_runs(cp, tmp_path) -> None:
    root = tmp_path / "corpus"
    for rel, text in CORPUS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    doc, seconds = _deploy(root, tmp_path / "cache", cp)  # checks included
    print(f"\ndeploy of the corpus project (check included): {seconds:.1f} s")
    assert [t["env"] for t in doc["targets"]] == ["corpus"]
    specs = _specs(cp)
    assert {"corpus.count_words", "corpus.top_word"} <= set(specs)
    backend = Backend(cp, PROJECT, DOMAIN)
    backend.serve_children()
    lines = ["The cat sat.", "The dog; the END!"]
    runs = [{"run": "corpus", "name": "corpus.top_word", "module": "corpus.tasks.report", "task": "top_word",
             "kwargs": {"lines": lines}, "spec": specs["corpus.top_word"]}]
    backend.run_tasks(root, runs)
    r = runs[0]
    assert r["action"].proc.returncode == 0, r["action"].proc.stderr[-3000:]
    assert r["remote"] == {"value": "the"} and r["local"] == "the"
    assert [(a.task, a.parent) for a in backend.actions if a.parent] == [("corpus.count_words", "a0")]


# a task that is not a Python function (flyte's ContainerTask, in an env made by
# TaskEnvironment.from_task), a Python env calling it, and an app whose parameter
# is another app's endpoint: deployed over the wire, checked where the image allows
SHAPES = {
    "pyproject.toml": '[project]\nname = "shapes"\nversion = "0"\n',
    "shapes/__init__.py": "",
    "shapes/containers.py": """import flyte
from flyte.extras import ContainerTask

greet = ContainerTask(
    name="greet",
    image="{base}",
    inputs={{"name": str}},
    outputs={{"greeting": str}},
    command=["/bin/sh", "-c", "printf 'hello %s' {{{{.inputs.name}}}} > /var/outputs/greeting"],
)

container_env = flyte.TaskEnvironment.from_task("container_env", greet)
""",
    "shapes/caller.py": """import flyte

from shapes.containers import container_env, greet

env = flyte.TaskEnvironment(name="caller", image="{runtime}", depends_on=[container_env])


@env.task
async def hello(name: str = "world") -> str:
    return await greet(name=name)
""",
    "shapes/apps.py": """import flyte
import flyte.app

backend = flyte.app.AppEnvironment(name="backend-app", image="{runtime}", port=8080,
                                   args=["python", "-m", "http.server", "8080"])
frontend = flyte.app.AppEnvironment(
    name="frontend-app", image="{runtime}", port=8081, args=["python", "-m", "http.server", "8081"],
    depends_on=[backend],
    parameters=[flyte.app.Parameter(name="backend_url", env_var="BACKEND_URL",
                                    value=flyte.app.AppEndpoint(app_name="backend-app"))],
)
""",
}


def test_a_container_task_and_an_app_endpoint_pair_deploy_over_the_wire(cp, tmp_path) -> None:
    from tests.support.docker_env import BASE_IMAGE, ensure_base_image, ensure_runtime_image

    ensure_base_image()
    runtime = ensure_runtime_image()
    root = tmp_path / "shapes"
    for rel, text in SHAPES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text.format(base=BASE_IMAGE, runtime=runtime) if rel.endswith(".py") else text)
    doc, seconds = _deploy(root, tmp_path / "cache", cp)  # checks included
    print(f"\ndeploy of the container task and the app pair (checks included): {seconds:.1f} s")
    order = [t["env"] for t in doc["targets"]]
    assert order.index("container_env") < order.index("caller") and order.index("backend-app") < order.index("frontend-app")
    assert sorted(doc["deployed"]) == ["backend-app", "caller", "container_env", "frontend-app"]
    specs = _specs(cp)
    greet = specs["greet"].task_template
    assert greet.type == "raw-container" and greet.container.image == BASE_IMAGE
    assert list(greet.container.args[:2]) == ["/bin/sh", "-c"] and greet.container.data_config.output_path == "/var/outputs"
    assert "--resolver" in specs["caller.hello"].task_template.container.args
    # the container task runs from the spec received, as the backend starts it: a primitive
    # input rendered into the args, the output read back from the data config's output path
    import subprocess

    out_dir = tmp_path / "outputs"
    out_dir.mkdir(mode=0o777)
    out_dir.chmod(0o777)
    args = [a.replace("{{.inputs.name}}", "world") for a in greet.container.args]
    proc = subprocess.run(["docker", "run", "--rm", "-v", f"{out_dir}:{greet.container.data_config.output_path}",
                           "--entrypoint", args[0], greet.container.image, *args[1:]],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert (out_dir / "greeting").read_text() == "hello world"
    created = [req.app for m, req in cp.calls if m == "CreateApp"]
    assert [a.metadata.id.name for a in created] == ["backend-app", "frontend-app"]
    assert [(i.name, i.string_value) for i in created[1].spec.inputs.items] == [("backend_url", "backend-app")]
    # the checks ran before the deploy: the container task's program was found in its image,
    # the caller's task loaded from its bundle in the runtime image
    checks = flyte_build("build", "check:container_env", "check:caller", "--json", cwd=root, cache=tmp_path / "cache")
    assert checks.rc == 0, checks.err
    recs = {t["target"]: t for t in checks.json()["targets"] if t["kind"] == "check"}
    assert {a: (r["cached"], r["check"]) for a, r in recs.items()} == {
        "check:container_env": (True, "passed"), "check:caller": (True, "passed")}
    assert recs["check:container_env"]["tasks"] == ["greet"] and recs["check:caller"]["tasks"] == ["caller.hello"]
