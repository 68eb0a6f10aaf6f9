"""The image layers beyond the basics, each built by a real Docker engine and checked in a container.

tests/support/layers_repo declares one env per layer kind (with_poetry_project,
from_uv_script, with_dockerignore, a secret mount, a PythonWheels layer as
with_local_v2 makes). A module-scoped fixture builds each image once, one
`flyte-build build image:<env>` at a time (its wall time is the table in
BUILD.md), on the offline base `flyte-build-test/python:3.11`, with a
per-session build arg so the tags are new. The tests then run containers of
those images. The images are removed at the module's end (and, should a build
fail, the ones made before it at the session's end).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.support import session_images
from tests.support.cli import copy_tree, flyte_build
from tests.support.docker_env import ensure_base_image

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]  # five cold image builds in one fixture

LAYERS_REPO = Path(__file__).resolve().parent / "support" / "layers_repo"
ENVS = ("layers_poetry", "layers_poetry_deps", "layers_uv_script", "layers_dockerignore", "layers_secret", "layers_wheels")
SECRET = f"fb-layers-{uuid.uuid4().hex}"  # a value that exists nowhere else


def _wheel(dest: Path, name: str, version: str, requires: list[str], body: str) -> Path:
    """A minimal pure-Python wheel, written by hand (no build backend needed)."""
    dest.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": body,
        f"{info}/METADATA": "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: flyte-build-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    path = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for n, text in {**files, f"{info}/RECORD": record}.items():
            z.writestr(zipfile.ZipInfo(n, (1980, 1, 1, 0, 0, 0)), text)
    return path


def _docker_run(uri: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "run", "--rm", "--network", "host", uri, *cmd], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    ensure_base_image()
    root = tmp_path_factory.mktemp("layers")
    repo = root / "repo"
    copy_tree(LAYERS_REPO, repo)
    envs = repo / "envs.py"
    envs.write_text(envs.read_text().replace("@SESSION@", uuid.uuid4().hex))
    _wheel(repo / "dist", "fbwheel", "1.0", ["six"], 'MARK = "local wheel"\n')
    (repo / "pyproject.toml").write_text(
        '[project]\nname = "layers"\nversion = "0"\n\n'
        "[tool.hatch.build.targets.flyte]\ncopy-style = \"loaded_modules\"\n\n"
        "[tool.hatch.build.targets.flyte.docker]\n"
        'base-images = { debian = "flyte-build-test/python:3.11" }\ndebian-recipe = "light"\nnetwork = "host"\n'
        # a per-session build arg enters every tag, so this session really builds
        f'build-args = {{ TEST_SESSION = "{uuid.uuid4().hex}" }}\n'
    )
    cache = root / "cache"
    env = {"FB_LAYERS_TOKEN": SECRET}
    records, seconds = {}, {}
    for name in ENVS:
        start = time.monotonic()
        run = flyte_build("build", f"image:{name}", "--json", cwd=repo, cache=cache, env=env, timeout=900)
        seconds[name] = round(time.monotonic() - start, 1)
        assert run.rc == 0, f"image:{name} failed ({run.rc}):\n{run.err[-4000:]}"
        records[name] = {t["target"]: t for t in run.json()["targets"]}[f"image:{name}"]
        session_images.own(records[name]["uri"])  # gone at the session's end even if a later build fails
    (root / "timings.json").write_text(json.dumps(seconds, indent=1))
    print("layer build seconds:", seconds)
    yield {"repo": repo, "cache": cache, "records": records, "seconds": seconds}
    for r in records.values():
        subprocess.run(["docker", "image", "rm", "-f", r["uri"]], capture_output=True, timeout=120)


def test_every_layer_image_was_really_built(built) -> None:
    for name in ENVS:
        r = built["records"][name]
        assert r["status"] == "built" and r["docker_build"] is True, r


def test_poetry_project_installs_the_locked_dependencies_and_the_project(built) -> None:
    uri = built["records"]["layers_poetry"]["uri"]
    code = ("import importlib.util, fbpoetry, six; print(fbpoetry.MARK, six.__version__, fbpoetry.__file__, "
            "importlib.util.find_spec('poetry') is None)")
    out = _docker_run(uri, "/opt/venv/bin/python", "-c", code)
    assert out.returncode == 0, out.stderr
    mark, version, where, no_poetry = out.stdout.split()
    assert (mark, version) == ("fbpoetry", "1.16.0")  # six pinned by poetry.lock, not the newest
    assert where == "/root/.flyte/src/poetry_proj/fbpoetry/__init__.py"  # install_project: the project, installed from its copy
    assert no_poetry == "True"  # poetry itself stays out of the task's venv


def test_poetry_dependencies_only_installs_the_lock_but_not_the_project(built) -> None:
    code = "import importlib.util, six; print(six.__version__, importlib.util.find_spec('fbpoetry') is None)"
    out = _docker_run(built["records"]["layers_poetry_deps"]["uri"], "/opt/venv/bin/python", "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1.16.0", "True"]  # `poetry install --no-root`, flyte's default


def test_uv_script_dependencies_are_installed(built) -> None:
    out = _docker_run(built["records"]["layers_uv_script"]["uri"], "python", "-c", "import six; print(six.__version__)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1.16.0"


def test_dockerignored_files_are_not_in_the_image(built) -> None:
    uri = built["records"]["layers_dockerignore"]["uri"]
    out = _docker_run(uri, "find", "/app/assets", "-type", "f")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == ["/app/assets/keep.txt"]  # big.bin and sub/x.bin left out
    import tarfile

    with tarfile.open(built["records"]["layers_dockerignore"]["path"], "r:gz") as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == ["Dockerfile", "context/src/assets/keep.txt"]


def test_secret_is_visible_to_the_build_step_and_absent_from_the_image(built) -> None:
    uri = built["records"]["layers_secret"]["uri"]
    out = _docker_run(uri, "sh", "-c", "cat /secret-proof; env; ls -a /run/secrets 2>&1 || true")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == hashlib.sha256(SECRET.encode()).hexdigest()  # the step saw the value
    assert SECRET not in out.stdout  # not in the environment, no file left behind
    # nowhere in the image: its config, history and every layer
    saved = subprocess.run(["docker", "save", uri], capture_output=True, timeout=300)
    assert saved.returncode == 0 and len(saved.stdout) > 1_000_000
    assert SECRET.encode() not in saved.stdout
    history = subprocess.run(["docker", "history", "--no-trunc", uri], capture_output=True, text=True, timeout=60).stdout
    assert "secret-proof" in history and SECRET not in history
    # nor in flyte-build's log of the build, nor in its cache
    for p in built["cache"].rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p


def test_a_missing_secret_names_where_it_is_read_from(built, tmp_path) -> None:
    # a fresh cache and another build arg: a new tag, so the build is really attempted
    p = built["repo"] / "pyproject.toml"
    p.write_text(p.read_text().replace("TEST_SESSION = ", "TEST_SESSION_AGAIN = "))
    run = flyte_build("build", "image:layers_secret", cwd=built["repo"], cache=tmp_path / "cache", env={"FB_LAYERS_TOKEN": None})
    # a secret the build needs and nobody set is the user's to fix: exit 2 (docker_engine.secret_flags)
    assert run.rc == 2, run.describe()
    assert "FB-LAYERS-TOKEN" in run.err and "/etc/secrets/fb-layers-token" in run.err, run.err[-2000:]
    assert not list(tmp_path.joinpath("cache").rglob("image-context.tar.gz"))


def test_local_wheel_wins_and_its_dependencies_come_from_the_index(built) -> None:
    out = _docker_run(built["records"]["layers_wheels"]["uri"], "python", "-c", "import fbwheel, six; print(fbwheel.MARK); print(six.__name__)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["local wheel", "six"]
