import os
import time

import pytest

from tests.support.cli import copy_sample, flyte_build
from tests.support.requirements import STRICT
# at its end, each session (each pytest-xdist worker) removes the Docker images it made
from tests.support.session_images import pytest_sessionfinish  # noqa: F401
# pytest-xdist's workers take whole files and groups of files, longest first
from tests.support.xdist_scheduling import pytest_addoption, pytest_xdist_make_scheduler  # noqa: F401
# the reliability suite's table by category (its reports may come from pytest-xdist workers)
from tests.support.reliability_tally import pytest_runtest_logreport, pytest_terminal_summary  # noqa: F401


# The suite runs as a CI job: builds with a shared cache publish to it (outside
# CI, with no signing key, a run only reads the shared cache; see BUILD.md,
# "Trust and the shared cache"). Tests of that default clear CI themselves.
os.environ["CI"] = "true"
# Commands run in their own process: tests that clear CI would otherwise leave a
# resident process per cache behind, and time or measure the thin client. The
# resident process's own tests (test_daemon, test_watch) turn it on.
os.environ["FLYTE_BUILD_DAEMON"] = "0"


@pytest.fixture
def repo(tmp_path):
    """A fresh copy of sample_monorepo (suites with another kind of repo define their own)."""
    return copy_sample(tmp_path / "repo")


@pytest.fixture
def control_plane():
    """The local control plane (flyteidl2's server classes on loopback), one per test."""
    from tests.support import controlplane
    from tests.support.requirements import require

    ok, why = controlplane.available()
    require(ok, why)
    cp = controlplane.ControlPlane.start()
    yield cp
    cp.stop()


@pytest.fixture(scope="session")
def checked_sample(tmp_path_factory):
    """sample_monorepo copied once and `build 'check:*'` run on it in one cache:
    its images built cold and pushed, and every check passed. Shared by the check,
    image and end-to-end suites; a test that edits the repository works on its own
    copy (`tests.support.cli.copy_checked`), the keys do not depend on the path.

    Cold: the debian base and flyte's runtime image are per-session copies (new
    image ids, `docker_env.session_image`), so the engine's layer cache holds
    nothing built on them and every image, its flyte install included, is really
    built (test_images reads the build logs kept in "logs")."""
    from tests.support.docker_env import BASE_IMAGE, RUNTIME_IMAGE, ensure_runtime_image, session_image

    ensure_runtime_image()
    root = tmp_path_factory.mktemp("checked-sample")
    repo, cache = copy_sample(root / "repo"), root / "cache"
    base, runtime = session_image(BASE_IMAGE, "checked_sample"), session_image(RUNTIME_IMAGE, "checked_sample-runtime")
    p = repo / "pyproject.toml"
    p.write_text(p.read_text().replace(
        'base-images = { debian = "flyte-build-test/python:3.11" }',
        f'base-images = {{ debian = "{base}" }}\nbase-map = {{ "{RUNTIME_IMAGE}" = "{runtime}" }}'))
    planned = flyte_build("targets", "--json", cwd=repo, cache=cache, in_process=True).assert_ok().json()
    started = time.perf_counter()
    run = flyte_build("build", "check:*", "--json", "--jobs", "2", cwd=repo, cache=cache, timeout=1800)
    assert run.rc == 0, f"build 'check:*' failed ({run.rc}):\n{run.err[-4000:]}"
    return {"root": root, "repo": repo, "cache": cache, "seconds": time.perf_counter() - started,
            "planned": {t["target"]: t for t in planned["targets"]},
            "first": {t["target"]: t for t in run.json()["targets"]},
            # the first build's logs, before later tests' builds in this cache overwrite them
            "logs": {p.name: p.read_text() for p in (cache / "logs").glob("*.log")}}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # Strict mode: any skip at all (not only those through `require`) fails the run.
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under FLYTE_BUILD_TEST_STRICT=1: {report.longrepr}"
