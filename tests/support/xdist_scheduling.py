"""How pytest-xdist shares the suite between its workers (pyproject: `-n 2 --dist loadfile`).

A unit of work is a test file, or a group of files named in the ini option
`xdist_file_groups` ("NAME = FILE FILE ..."), which one worker runs whole. A
module- or session-scoped fixture is then set up once, on the worker that runs
its unit: the checked sample's cold image build (conftest `checked_sample`)
serves test_check, test_images and test_e2e_run, which form the group
"checked_sample". (xdist's own `loadgroup` and its `xdist_group` mark would say
the same, but xdist 3.8 marks the group in a node id pytest 9 no longer reads.)

Units start longest first, so that a long unit never starts last and runs alone
at the end: `SECONDS` holds measured figures (see the note of the session that set
them); a unit not listed counts `SECONDS_PER_TEST` a test. A stale figure only
changes the order, never what runs.
"""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadScopeScheduling

SECONDS_PER_TEST = 1.5

# unit -> seconds, for the units well above SECONDS_PER_TEST a test (first estimates from one
# worker's runs: the checked sample's cold build alone was 81 s of test_check's)
SECONDS: dict[str, float] = {
    "checked_sample": 300.0,
    "tests/test_image_layers.py": 90.0,
    "tests/test_affected.py": 70.0,
}


def pytest_addoption(parser):
    parser.addini("xdist_file_groups", "NAME = FILE FILE ...: files one pytest-xdist worker runs together "
                  "(tests/support/xdist_scheduling.py)", type="linelist", default=[])


def file_groups(lines: list[str]) -> dict[str, str]:
    """file (as node ids spell it) -> group name, from the ini option's lines."""
    groups = {}
    for line in lines:
        name, sep, files = line.partition("=")
        if not sep or not name.strip() or not files.split():
            raise pytest.UsageError(f"xdist_file_groups: {line!r} is not `NAME = FILE FILE ...`")
        groups.update({f: name.strip() for f in files.split()})
    return groups


class FileOrGroupScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with files and file groups as the scopes, longest first."""

    def __init__(self, config, log=None):
        super().__init__(config, log)
        self.groups = file_groups(config.getini("xdist_file_groups"))

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return self.groups.get(path, path)

    def _seconds(self, unit: str) -> float:
        return SECONDS.get(unit, SECONDS_PER_TEST * len(self.workqueue[unit]))

    def _assign_work_unit(self, node) -> None:
        # the base class hands out the first unit of its queue: put the longest there
        longest = max(self.workqueue, key=self._seconds)
        self.workqueue.move_to_end(longest, last=False)
        super()._assign_work_unit(node)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") == "loadfile":
        return FileOrGroupScheduling(config, log)
    return None
