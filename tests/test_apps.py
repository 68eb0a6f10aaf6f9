"""flyte.app.AppEnvironment as targets: discovered beside task envs, bundled,
imaged and deployed through AppService in `depends_on` order.

The repository: a task env `work`, an app `web` that depends on it, and a
task env `report` that depends on the app (both directions of the edge).
Images are URI references, so nothing is built. Deploys go to the loopback
control plane (tests/support/controlplane.py); the App it receives is
compared with what flyte's own serializer makes of the same app.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support import controlplane
from tests.support.cli import flyte_build

IMG = "127.0.0.1:9/test-apps/{}:1"  # references only: nothing listens on port 9
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

WORK = f'''import flyte

work_env = flyte.TaskEnvironment(name="work", image="{IMG.format("work")}")


@work_env.task
async def double(x: int) -> int:
    return 2 * x
'''
WEB = f'''import flyte
import flyte.app

from svc.work import work_env

web_env = flyte.app.AppEnvironment(
    name="web",
    image="{IMG.format("web")}",
    port=8080,
    args=["python", "-m", "http.server", "8080"],
    depends_on=[work_env],
    scaling=flyte.app.Scaling(replicas=(1, 2)),
    requires_auth=False,
    env_vars={{"GREETING": "hello"}},
    include=["static/index.html"],
)
'''
REPORT = f'''import flyte

from svc.web import web_env

report_env = flyte.TaskEnvironment(name="report", image="{IMG.format("report")}", depends_on=[web_env])


@report_env.task
async def summary(n: int) -> str:
    return str(n)
'''


def write_repo(root: Path) -> Path:
    (root / "svc" / "static").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "t"\nversion = "0"\n\n[tool.hatch.build.targets.flyte]\n')
    (root / "svc" / "__init__.py").write_text("")
    (root / "svc" / "work.py").write_text(WORK)
    (root / "svc" / "web.py").write_text(WEB)
    (root / "svc" / "report.py").write_text(REPORT)
    (root / "svc" / "static" / "index.html").write_text("<h1>hello</h1>\n")
    return root


def run_json(root: Path, cache: Path, *args: str) -> dict:
    run = flyte_build(*args, cwd=root, cache=cache, env=AWS)
    assert run.rc == 0, f"flyte-build {' '.join(args)} failed ({run.rc}):\n{run.err[-3000:]}"
    return run.json()


def test_apps_are_targets_in_targets_graph_and_dry_run(tmp_path):
    root, cache = write_repo(tmp_path / "repo"), tmp_path / "cache"
    plan = run_json(root, cache, "deploy", "--dry-run", "--json")
    assert plan["order"] == ["work", "web", "report"]
    by_env = {r["env"]: r for r in plan["targets"]}
    web = by_env["web"]
    assert web["env_kind"] == "app" and web["tasks"] == []
    assert by_env["work"]["env_kind"] == by_env["report"]["env_kind"] == "task"
    app = web["app"]
    assert app["metadata"]["id"]["name"] == "web"
    container = app["spec"]["container"]
    assert container["image"] == IMG.format("web")
    assert container["args"] == ["python", "-m", "http.server", "8080"]
    cmd = container["command"]
    assert cmd[:3] == ["fserve", "--version", web["version"]]
    assert cmd[cmd.index("--tgz") + 1] == app["metadata"]["code_bundle_uri"] == web["bundle_uri"]
    assert cmd[cmd.index("--resolver-args") + 1] == "svc.web:web_env"
    assert app["spec"]["autoscaling"]["replicas"] == {"min": 1, "max": 2}
    assert app["spec"]["security_context"] == {"allow_anonymous": True}

    doc = run_json(root, cache, "targets", "--json")
    assert {e["env"]: e["kind"] for e in doc["envs"]} == {"work": "task", "web": "app", "report": "task"}
    targets = {t["target"]: t for t in doc["targets"]}
    assert sorted(a for a, t in targets.items() if t["env"] == "web") == ["bundle:web", "deploy:web", "image:web", "specs:web"]
    assert targets["image:web"]["uri"] == IMG.format("web")
    # the app's bundle (built by the dry run): its module's import closure plus its `include`
    assert targets["bundle:web"]["cached"] and targets["bundle:web"]["digest"] == web["bundle"]
    with tarfile.open(targets["bundle:web"]["path"]) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
    assert names == ["svc/__init__.py", "svc/static/index.html", "svc/web.py", "svc/work.py"]

    graph = flyte_build("graph", cwd=root, cache=cache)
    assert graph.rc == 0, graph.err
    assert "deploy order: work → web (app) → report" in graph.out
    assert "deploy:web  <- bundle:web, image:web, specs:web, deploy:work" in graph.out
    assert "deploy:report  <- bundle:report, image:report, specs:report, check:report, deploy:web" in graph.out
    assert "check:web" not in graph.out  # an app has no tasks to load

    # the app's version moves with its code and its dependency's, not with its dependent's
    (root / "svc" / "report.py").write_text(REPORT + "\n# edited\n")
    again = {r["env"]: r["version"] for r in run_json(root, cache, "deploy", "--dry-run", "--json")["targets"]}
    assert again["web"] == web["version"] and again["work"] == by_env["work"]["version"]
    assert again["report"] != by_env["report"]["version"]
    (root / "svc" / "work.py").write_text(WORK + "\n# edited\n")
    again = {r["env"]: r["version"] for r in run_json(root, cache, "deploy", "--dry-run", "--json")["targets"]}
    assert again["web"] != web["version"]


def _refused_repo(root: Path) -> Path:
    """`web` asks for a RunOutput (a documented refusal); `report` depends on it, `work` does not."""
    write_repo(root)
    (root / "svc" / "web.py").write_text(WEB.replace(
        "    include=", '    parameters=[flyte.app.Parameter(name="model", value=flyte.app.RunOutput(type="file", '
        'task_name="work.double"))],\n    include='))
    return root


REFUSED = "app `web`: parameters model are resolved by asking the backend"


@pytest.mark.parametrize("flags", [(), ("-i",)])
def test_an_env_that_cannot_be_serialized_fails_alone_in_the_plan(tmp_path, flags):
    root, cache = _refused_repo(tmp_path / "repo"), tmp_path / "cache"
    run = flyte_build(*flags, "deploy", "--dry-run", "--json", cwd=root, cache=cache)
    assert run.rc == 1, run.err
    doc = run.json()
    assert doc["order"] == ["work"] and doc["ok"] is False
    assert [(f["env"], REFUSED in f["error"]) for f in doc["failed"]] == [("web", True)]
    assert doc["skipped"] == [{"env": "report", "error": "depends on `web`, which cannot be serialized"}]
    assert "Traceback" not in run.err
    text = flyte_build(*flags, "deploy", "--dry-run", cwd=root, cache=cache)
    assert text.rc == 1 and f"flyte-build: failed: `web` cannot be serialized: {REFUSED}" in text.err
    assert "flyte-build: skipped: `report` depends on `web`" in text.err and "│ work" in text.out
    # an unrelated env alone plans, as if the refused one were not there
    other = flyte_build(*flags, "deploy", "--dry-run", "--json", "deploy:work", cwd=root, cache=cache)
    assert other.rc == 0, other.err
    assert other.json()["order"] == ["work"] and other.json()["failed"] == []
    # only the selected env and its dependencies are serialized: the refused one is no part of the run
    quiet = flyte_build(*flags, "deploy", "--dry-run", "deploy:work", cwd=root, cache=tmp_path / "cache2")
    assert quiet.rc == 0 and "│ work" in quiet.out, quiet.err
    assert "specs:web" not in quiet.err + quiet.out and "web" not in other.json()["order"]


def test_an_env_whose_bundle_cannot_be_built_fails_alone_in_the_plan(tmp_path):
    root, cache = tmp_path / "repo", tmp_path / "cache"
    write_repo(root)
    (root / "svc" / "web.py").write_text(WEB.replace('include=["static/index.html"]', 'include=["static/gone.html"]'))
    run = flyte_build("deploy", "--dry-run", "--json", cwd=root, cache=cache)
    assert run.rc == 1, run.err
    doc = run.json()
    assert doc["order"] == ["work"] and doc["ok"] is False and "Traceback" not in run.err
    [failed] = doc["failed"]
    assert failed["env"] == "web" and failed["error"].startswith("cannot be bundled: ") and "static/gone.html" in failed["error"]
    assert doc["skipped"] == [{"env": "report", "error": "depends on `web`, which cannot be bundled"}]
    text = flyte_build("deploy", "--dry-run", cwd=root, cache=cache)
    assert text.rc == 1 and "flyte-build: failed: `web` cannot be bundled: " in text.err and "│ work" in text.out
    assert "flyte-build: skipped: `report` depends on `web`, which cannot be bundled" in text.err
    other = flyte_build("deploy", "--dry-run", "deploy:work", cwd=root, cache=cache)
    assert other.rc == 0 and "│ work" in other.out, other.err
    assert "bundle:web" not in other.err + other.out and "specs:web" not in other.err + other.out


# -- a real deploy -------------------------------------------------------------------

REFERENCE = r'''
import json, pathlib, sys
root = pathlib.Path(sys.argv[1]).resolve()
import flyte  # flyte.init puts the root on sys.path once, as `flyte deploy` has it
flyte.init(project="proj", domain="development", root_dir=root)
from flyte._internal.image_cache import ImageCache
from flyte.app._runtime import translate_app_env_to_idl
from flyte.models import CodeBundle, SerializationContext
from google.protobuf.json_format import MessageToDict
import svc.web
a = json.loads(sys.argv[2])
sc = SerializationContext(version=a["version"], project="proj", domain="development", org=None,
                          code_bundle=CodeBundle(computed_version=a["version"], tgz=a["tgz"]),
                          image_cache=ImageCache(image_lookup=a["images"]), root_dir=root)
app = translate_app_env_to_idl(svc.web.web_env, sc)
sys.stdout.write("\n@@APP@@" + json.dumps(MessageToDict(app, preserving_proto_field_name=True)))
'''


def flyte_serialized_app(root: Path, version: str, tgz: str, images: dict) -> dict:
    """The App flyte's own serializer makes of `web_env`, as `flyte deploy` calls it."""
    proc = subprocess.run([sys.executable, "-c", REFERENCE, str(root), json.dumps(
        {"version": version, "tgz": tgz, "images": dict(sorted(images.items()))})],
        cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.split("@@APP@@", 1)[1])


def git(root: Path, *args: str) -> str:
    import os

    from tests.support.gitrepo import GIT_ENV

    return subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()


@pytest.mark.servers
def test_real_deploy_orders_apps_with_tasks_and_sends_flytes_app(tmp_path, control_plane):
    from google.protobuf.json_format import MessageToDict

    cp = control_plane
    root, cache = write_repo(tmp_path / "repo"), tmp_path / "cache"
    # a checkout with a remote: flyte links the App to the commit (metadata.source_code)
    for args in (["init", "-q", "-b", "main"], ["remote", "add", "origin", "https://example.invalid/acme/svc.git"],
                 ["add", "-A"], ["commit", "-q", "-m", "base"]):
        git(root, *args)
    plan = {r["env"]: r for r in run_json(root, cache, "deploy", "--dry-run", "--json")["targets"]}
    assert plan["web"]["app"]["metadata"]["source_code"] == {
        "link": f"https://example.invalid/acme/svc/tree/{git(root, 'rev-parse', 'HEAD')}"}
    # the images are references to nothing (port 9): this test is about deploys, not checks
    args = ("--project", "proj", "--domain", "development", "deploy", "--endpoint", cp.endpoint, "--insecure", "--json", "--no-check")
    doc = run_json(root, cache, *args)
    assert doc["deployed"] == ["work", "web", "report"]

    # dependencies first: work's task, then the app, then report's task
    sent = [(m, req) for m, req in cp.calls if m in ("DeployTask", "CreateApp")]
    assert [(m, req.spec.environment.name if m == "DeployTask" else req.app.metadata.id.name) for m, req in sent] == \
        [("DeployTask", "work"), ("CreateApp", "web"), ("DeployTask", "report")]
    app = next(req.app for m, req in sent if m == "CreateApp")
    got = MessageToDict(app, preserving_proto_field_name=True)
    assert (app.metadata.id.project, app.metadata.id.domain) == ("proj", "development")
    assert app.metadata.code_bundle_uri.startswith("s3://")
    # the bundle uploaded is the one the dry run built
    bucket, key = app.metadata.code_bundle_uri.removeprefix("s3://").split("/", 1)
    body = cp.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    import hashlib

    assert "sha256:" + hashlib.sha256(body).hexdigest() == plan["web"]["bundle"]
    # differential: flyte's own serializer, same app, same version, bundle and images
    # (every env of the deploy is in the image cache, as flyte's merged cache has it)
    want = flyte_serialized_app(root, plan["web"]["version"], app.metadata.code_bundle_uri,
                                {"web": IMG.format("web"), "work": IMG.format("work"), "report": IMG.format("report")})
    assert got == want
    # the dependent task env names the app's image in its image cache, as flyte does
    report = next(req for m, req in sent if m == "DeployTask")
    assert report.task_id.version == plan["work"]["version"]

    # unchanged, even at a new commit (the git link alone does not redeploy): nothing is sent again
    (root / "NOTES.txt").write_text("not part of any bundle\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "notes")
    n = len(cp.calls)
    again = run_json(root, cache, *args)
    assert sorted(again["unchanged"]) == ["report", "web", "work"] and cp.calls[n:] == []

    # an edited app: Create finds it, so Get and Update (a new revision), as flyte's App.create does
    (root / "svc" / "web.py").write_text(WEB.replace("(1, 2)", "(1, 3)"))
    n = len(cp.calls)
    edited = run_json(root, cache, *args)
    # report imports svc.web, so its bundle (and version) changed too; work did not
    assert edited["deployed"] == ["web", "report"] and edited["unchanged"] == ["work"]
    assert [m for m, _ in cp.calls[n:] if m.endswith("App")] == ["CreateApp", "GetApp", "UpdateApp"]
    stored = cp.apps[("proj", "development", "web")]
    assert stored.metadata.revision == 2 and stored.spec.autoscaling.replicas.max == 3


@pytest.mark.servers
def test_a_real_deploy_deploys_every_env_but_the_refused_one_and_its_dependents(tmp_path, control_plane):
    cp = control_plane
    root = _refused_repo(tmp_path / "repo")
    run = flyte_build("--project", "proj", "--domain", "development", "deploy", "--endpoint", cp.endpoint, "--insecure",
                      "--json", "--no-check", cwd=root, cache=tmp_path / "cache", env=AWS)
    assert run.rc == 1, run.err
    doc = run.json()
    assert doc["deployed"] == ["work"] and doc["failed"] == ["web"] and doc["skipped"] == ["report"]
    errors = {t["env"]: t["error"] for t in doc["targets"]}
    assert REFUSED in errors["web"] and errors["report"] == "depends on `web`, which cannot be serialized"
    assert [m for m, _ in cp.calls if m in ("DeployTask", "CreateApp")] == ["DeployTask"]


def _broken_repo(root: Path, broken: str) -> Path:
    """`web`'s bundle cannot be built (its include names no file), or `report`'s image
    cannot be described to docker (a source file that does not exist)."""
    write_repo(root)
    if broken == "bundle":
        (root / "svc" / "web.py").write_text(WEB.replace('include=["static/index.html"]', 'include=["static/gone.html"]'))
    else:
        (root / "svc" / "report.py").write_text(REPORT.replace(
            f'image="{IMG.format("report")}"', 'image=flyte.Image.from_debian_base().with_source_file(__import__("pathlib").Path("gone.txt"))'))
    return root


@pytest.mark.servers
@pytest.mark.parametrize("broken, deployed, failed, skipped, why", [
    ("bundle", ["work"], "web", {"report": "depends on `web`, which cannot be bundled"}, "cannot be bundled: "),
    ("image", ["work", "web"], "report", {}, "has no image: image:report failed: "),
])
def test_a_real_deploy_goes_on_past_an_env_whose_bundle_or_image_fails(tmp_path, control_plane, broken, deployed, failed,
                                                                        skipped, why):
    cp = control_plane
    root = _broken_repo(tmp_path / "repo", broken)
    run = flyte_build("--project", "proj", "--domain", "development", "deploy", "--endpoint", cp.endpoint, "--insecure",
                      "--json", "--no-check", cwd=root, cache=tmp_path / "cache", env=AWS)
    assert run.rc == 1, run.err
    doc = run.json()
    assert doc["deployed"] == deployed and doc["failed"] == [failed] and doc["skipped"] == sorted(skipped), run.err
    errors = {t["env"]: t["error"] for t in doc["targets"]}
    assert errors[failed].startswith(why) and "gone" in errors[failed], errors
    assert {n: errors[n] for n in skipped} == skipped and "Traceback" not in run.err
    sent = [m for m, _ in cp.calls if m in ("DeployTask", "CreateApp")]
    assert sent == ["DeployTask", "CreateApp"][:len(deployed)]
