"""How pytest-xdist shares the suite between its workers (pyproject: `-n 2 --dist loadfile`).

A unit of work is a test file, or a group of files named in the ini option
`xdist_file_groups` ("NAME = FILE FILE ..."), which one worker runs whole. A
module- or session-scoped fixture is then set up once, on the worker that runs
its unit: the checked sample's cold image build (conftest `checked_sample`)
serves test_check, test_images and test_e2e_run, which form the group
"checked_sample". (xdist's own `loadgroup` and its `xdist_group` mark would say
the same, but xdist 3.8 marks the group in a node id pytest 9 no longer reads.)

Units start longest first, so that a long unit never starts last and runs alone
at the end: `SECONDS` holds measured figures; a unit not listed counts
`SECONDS_PER_TEST` a test. A stale figure only changes the order, never what runs.
"""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadScopeScheduling

SECONDS_PER_TEST = 1.5

# unit -> seconds (setup, call and teardown of its tests), measured in one `-n 2` run of the whole
# suite on the shared machine at load 4-8 (2026-11-30): only their order matters
SECONDS: dict[str, float] = {
    "tests/test_shared_cache.py": 470,
    # measured alone with -n 2 on 2026-12-07 (load ~6): 12 tests, four BuildGrid starts of ~10 s each
    "tests/test_reapi_cache.py": 180,
    "checked_sample": 404,
    # measured with -n 2 on 2026-12-07 (load ~12): 7 tests, ~60 commands each run with and without the daemon
    "tests/test_daemon_parity.py": 180,
    "tests/test_fidelity.py": 106,
    "tests/test_pex.py": 99,
    "tests/reliability/test_sigkill.py": 80,
    "tests/test_affected.py": 75,
    "tests/reliability/test_external_faults.py": 73,
    "tests/test_deploy.py": 72,
    "tests/reliability/test_bad_input.py": 71,
    "tests/reliability/test_issue15_low.py": 69,
    "tests/test_incremental_discovery.py": 67,
    "tests/test_image_layers.py": 59,
    "tests/reliability/test_poisoned_cache.py": 56,
    "tests/test_apps.py": 51,
    "tests/reliability/test_stale_and_hangs.py": 48,
    "tests/test_affected_ci.py": 47,
    "tests/test_hatch_plugin.py": 47,
    "tests/test_build_cli.py": 44,
    "tests/test_suite_settings.py": 38,
    "tests/test_bench_smoke.py": 38,
    "tests/test_flyte_config.py": 35,
    "tests/test_dockerfile.py": 30,
    "tests/test_deploy_auth.py": 28,
    "tests/test_build_manifest.py": 27,
    "tests/test_registry_auth.py": 26,
    "tests/reliability/test_cache_faults.py": 26,
    "tests/reliability/test_cache_trust.py": 24,
    "tests/test_shared_discovery.py": 23,
    "tests/test_sample_monorepo.py": 23,
    "tests/test_discovery_errors.py": 22,
    "tests/test_flyte_adapter.py": 19,
    "tests/reliability/test_config_tables.py": 19,
    "tests/test_session_images.py": 18,
    "tests/test_determinism.py": 18,
    "tests/reliability/test_hostile_repo.py": 17,
    "tests/test_packaging.py": 12,
    "tests/test_snapshot.py": 12,
    "tests/reliability/test_archive_properties.py": 11,
    "tests/reliability/test_secrets.py": 3,
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
