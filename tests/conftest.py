import os

import pytest

from tests.support.cli import copy_sample
from tests.support.requirements import STRICT


# The suite runs as a CI job: builds with a shared cache publish to it (outside
# CI, with no signing key, a run only reads the shared cache; see BUILD.md,
# "Trust and the shared cache"). Tests of that default clear CI themselves.
os.environ["CI"] = "true"


@pytest.fixture
def repo(tmp_path):
    """A fresh copy of sample_monorepo (suites with another kind of repo define their own)."""
    return copy_sample(tmp_path / "repo")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # Strict mode: any skip at all (not only those through `require`) fails the run.
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under FLYTE_BUILD_TEST_STRICT=1: {report.longrepr}"
