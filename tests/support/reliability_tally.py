"""The reliability suite's tally by category (tests/reliability/conftest.py).

Each reliability module marks its tests `@pytest.mark.reliability("<category>")`
and tests/reliability/conftest.py puts the category on each test's reports; at
the end of the run a table of tried/passed/failed/skipped per category is printed
(and written to $FLYTE_BUILD_RELIABILITY_REPORT as JSON when set), which is where
the counts in BUILD.md's reliability table come from.

These hooks live in tests/conftest.py, not beside the reliability tests: under
pytest-xdist the reports are made in the workers and reach the controller,
which loads only the top conftest (it collects nothing) and prints the summary.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

_TALLY: dict[str, dict[str, int]] = defaultdict(lambda: {"tried": 0, "passed": 0, "failed": 0, "skipped": 0})


def pytest_runtest_logreport(report):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker: the controller tallies its reports
        return
    category = dict(report.user_properties).get("reliability")
    if category is None:
        return
    # count once per test: its call phase, or the setup phase when that did not pass
    if report.when == "call" or (report.when == "setup" and not report.passed):
        row = _TALLY[category]
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
