"""The reliability suite tallies its own results by category.

Each module marks its tests `@pytest.mark.reliability("<category>")`; each test's
reports carry that category, and at the end of the run a table of
tried/passed/failed/skipped per category is printed (and written to
$FLYTE_BUILD_RELIABILITY_REPORT as JSON when set), which is where the counts in
BUILD.md's reliability table come from (tests/support/reliability_tally.py,
loaded by tests/conftest.py).
"""

from __future__ import annotations

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "reliability(category): the row of BUILD.md's reliability table a test counts in")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    mark = item.get_closest_marker("reliability")
    if mark is not None:
        # the category travels with the report: under pytest-xdist the reports are
        # made in the workers and tallied (and printed) by the controller
        outcome.get_result().user_properties.append(("reliability", mark.args[0]))
