"""The reliability suite tallies its own results by category.

Each module marks its tests `@pytest.mark.reliability("<category>")`; at the
end of the run a table of tried/passed/failed/skipped per category is printed
(and written to $FLYTE_BUILD_RELIABILITY_REPORT as JSON when set), which is
where the counts in BUILD.md's reliability table come from.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import pytest

_TALLY: dict[str, dict[str, int]] = defaultdict(lambda: {"tried": 0, "passed": 0, "failed": 0, "skipped": 0})


def pytest_configure(config):
    config.addinivalue_line("markers", "reliability(category): the row of BUILD.md's reliability table a test counts in")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    mark = item.get_closest_marker("reliability")
    if mark is None:
        return
    # count once per test: its call phase, or the setup phase when that did not pass
    if report.when == "call" or (report.when == "setup" and not report.passed):
        row = _TALLY[mark.args[0]]
        if report.skipped:
            row["skipped"] += 1
        else:
            row["tried"] += 1
            row["passed" if report.passed else "failed"] += 1


def pytest_terminal_summary(terminalreporter):
    if not _TALLY:
        return
    tr = terminalreporter
    tr.section("reliability: tried / passed")
    tr.write_line(f"{'category':<34} {'tried':>5} {'passed':>6} {'failed':>6} {'skipped':>7}")
    for cat, row in sorted(_TALLY.items()):
        tr.write_line(f"{cat:<34} {row['tried']:>5} {row['passed']:>6} {row['failed']:>6} {row['skipped']:>7}")
    path = os.environ.get("FLYTE_BUILD_RELIABILITY_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(dict(_TALLY), f, indent=2, sort_keys=True)
