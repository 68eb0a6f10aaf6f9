"""image:<env> against a real Docker engine and registry (no mocks).

The session's cold build of sample_monorepo's images (conftest's
`checked_sample`: per-session base images, so every image, its flyte install
included, is really built, then pushed), then on a copy of it with the same
cache: rebuilds, an edit, a registry hit and a failure. The tests run in file
order and share that state.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.cli import Run, copy_checked
from tests.support.docker_env import RUNTIME_IMAGE, manifest_digest

# the first test may set up the session's checked sample (a truly cold build)
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

SAMPLE = Path(__file__).resolve().parent.parent / "sample_monorepo"
IMAGES = ["image:preprocessing", "image:visualization", "image:reporting", "image:inference"]
BUILT = ("image:preprocessing", "image:visualization", "image:reporting")


def flyte_build(repo: Path, cache: Path, *args: str, check: bool = True) -> Run:
    out = cli.flyte_build(*args, cwd=repo, cache=cache, timeout=900)
    if check and out.rc != 0:
        raise AssertionError(f"flyte-build {' '.join(args)} exited {out.rc}\n{out.err[-3000:]}")
    return out


def records(out: Run) -> dict:
    return {t["target"]: t for t in out.json()["targets"]}


def created(uri: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}} {{.Created}}", uri], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def state(checked_sample):
    # a copy to edit; the first build's records, plan and logs are the session's
    return {"root": checked_sample["root"], "repo": copy_checked(checked_sample, "images"), "cache": checked_sample["cache"],
            "planned": checked_sample["planned"], "first": checked_sample["first"], "logs": checked_sample["logs"]}


def test_first_build_builds_pushes_and_pins(state) -> None:
    first, planned = state["first"], state["planned"]
    for t in BUILT:
        r = first[t]
        assert r["status"] == "built" and r["docker_build"] is True, r
        assert r["uri"] == planned[t]["uri"]  # targets --json knew the tag before the build
        host, _, rest = r["uri"].partition("/")
        repo_name, tag = rest.rsplit(":", 1)
        assert r["image_digest"] == manifest_digest(repo_name, tag) and r["image_digest"].startswith("sha256:")
        assert r["pinned"] == f"{host}/{repo_name}@{r['image_digest']}"
        assert r["digest"] == r["image_digest"]
    # from_ref_name("base") resolved by the config: nothing built, digest from the registry
    inf = first["image:inference"]
    assert inf["uri"] == RUNTIME_IMAGE and inf["docker_build"] is False
    assert inf["image_digest"] == manifest_digest("flyte-build/runtime", "py3.11")


def _steps(log: str) -> dict[str, str]:
    """BuildKit's plain progress: each Dockerfile step -> DONE or CACHED."""
    import re

    names, outcome = {}, {}
    for line in log.splitlines():
        m = re.match(r"^#(\d+) \[[^\]]*\d+/\d+\] (.*)$", line)
        if m:
            names[m.group(1)] = m.group(2)
        m = re.match(r"^#(\d+) (DONE|CACHED)\b", line)
        if m and m.group(1) in names:
            outcome[names[m.group(1)]] = m.group(2)
    return outcome


def test_the_first_build_was_cold(state) -> None:
    # the session's check:* build made all six images at once: a step two images share
    # (the flyte install every from_debian_base image starts with, a pip install two
    # envs declare alike) ran in one of them and was CACHED in the other
    every = [_steps(text) for name, text in state["logs"].items() if name.startswith("image--")]
    ran = {name for steps in every for name, o in steps.items() if o == "DONE"}
    assert any("pip install" in name and "flyte==" in name for name in ran), every
    # every image's own steps ran in this session: nothing came from an earlier one
    for t in BUILT:
        steps = _steps(state["logs"][f"{t.replace(':', '--')}.log"])
        own = [n for n in steps if "'six==1.17.0'" in n or "requirements.txt" in n]
        assert own and all(n in ran for n in own), (t, steps)


def test_container_has_the_pip_packages_and_source_folder(state) -> None:
    uri = state["first"]["image:visualization"]["uri"]
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "host", uri, "python", "-c",
         "import six, toolz, tabulate, sys; print(six.__version__, tabulate.__version__, sys.prefix); print(open('/app/assets/palette.txt').read())"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:3] == ["1.17.0", "0.9.0", "/opt/venv"]
    assert (SAMPLE / "services/visualization/assets/palette.txt").read_text().strip() in out.stdout
    rep = subprocess.run(["docker", "run", "--rm", "--network", "host", state["first"]["image:reporting"]["uri"], "python", "-c", "import tabulate"], capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr


def test_context_artifact_is_deterministic_and_complete(state) -> None:
    import tarfile

    r = state["first"]["image:reporting"]
    with tarfile.open(r["path"], "r:gz") as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
        assert all(m.mtime == 0 for m in tar.getmembers())
    # .dockerignore applied: no *.py, no config/, no debug.log
    assert sorted(names) == ["Dockerfile", "context/.dockerignore", "context/Dockerfile", "context/requirements.txt"]


def test_rebuild_without_change_runs_no_docker_build(state) -> None:
    before = {t: created(state["first"][t]["uri"]) for t in BUILT}
    logs = {p.name: p.stat().st_mtime_ns for p in (state["cache"] / "logs").glob("image--*.log")}
    again = records(flyte_build(state["repo"], state["cache"], "build", *IMAGES, "--json"))
    for t in IMAGES:
        assert again[t]["status"] == "cached" and again[t]["source"] == "local", again[t]
        assert again[t]["digest"] == state["first"][t]["digest"]
    assert {t: created(state["first"][t]["uri"]) for t in BUILT} == before  # the engine made no image
    assert {p.name: p.stat().st_mtime_ns for p in (state["cache"] / "logs").glob("image--*.log")} == logs  # no rule ran


def test_editing_a_source_folder_rebuilds_only_that_image(state) -> None:
    (state["repo"] / "services/visualization/assets/palette.txt").write_text("_.oO0\n")
    after = records(flyte_build(state["repo"], state["cache"], "build", *IMAGES, "--json"))
    viz = after["image:visualization"]
    assert viz["status"] == "built" and viz["docker_build"] is True
    assert viz["uri"] != state["first"]["image:visualization"]["uri"]
    for t in ("image:preprocessing", "image:reporting", "image:inference"):
        assert after[t]["status"] == "cached", after[t]
    out = subprocess.run(["docker", "run", "--rm", "--network", "host", viz["uri"], "cat", "/app/assets/palette.txt"], capture_output=True, text=True, timeout=120)
    assert out.stdout == "_.oO0\n"
    state["after_edit"] = after


def test_tag_in_registry_is_a_remote_hit_without_building(state) -> None:
    fresh = state["root"] / "images-fresh-cache"
    hit = records(flyte_build(state["repo"], fresh, "build", *BUILT, "--json"))
    for t in BUILT:
        assert hit[t]["status"] == "cached" and hit[t]["source"] == "remote", hit[t]
        assert hit[t]["docker_build"] is False
        assert hit[t]["image_digest"] == state["after_edit"][t]["image_digest"]
    assert not (fresh / "logs").exists() or not list((fresh / "logs").glob("image--*.log"))


def test_failed_build_shows_the_step_and_log_tail(state) -> None:
    dockerfile = state["repo"] / "services/reporting/Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + 'RUN echo "about to fail" && exit 3\n')
    out = flyte_build(state["repo"], state["cache"], "build", "image:reporting", check=False)
    assert out.rc == 1
    assert "docker build of 127.0.0.1:5000/flyte-build/reporting:" in out.err
    assert 'RUN echo "about to fail" && exit 3' in out.err  # the failing step
    # one line naming the step, then the path of the full log, which holds the build's output
    log = re.search(r"\(full log: ([^)]+)\)", out.err)
    assert log and "about to fail" in Path(log.group(1)).read_text(), out.err
    assert "about to fail" not in out.err.replace('RUN echo "about to fail"', "")
    assert not list((state["cache"] / "tmp").glob("image-*"))  # no half-written work dirs
