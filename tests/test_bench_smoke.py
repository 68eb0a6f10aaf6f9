"""The benchmark suite at its smallest size, once: a smoke test, not a timed test.

It proves the generator makes a tree flyte and flyte-build both load, and the
runner writes a table with every scenario row and sane numbers. Timing
thresholds live in BENCHMARKS.md, never here (the CI machine is shared).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench/ is not installed: run it from the checkout

from bench import run as bench_run  # noqa: E402


@pytest.mark.timeout(900)  # the whole benchmark at its smallest size: a dozen builds, flyte's too
def test_runner_smallest_size_writes_every_scenario(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "BENCH.md"
    bench_run.main(["--sizes", "small", "--repeat", "1", "--out", str(out), "--work", str(tmp_path / "work")])
    text = out.read_text()
    assert "## small: 10 envs" in text
    assert "Reproduce: `python -m bench.run" in text
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 9 and cells[0] in bench_run.SCENARIOS:
            rows[cells[0]] = cells
    assert set(rows) == set(bench_run.SCENARIOS)
    for name, cells in rows.items():
        if cells[1] == "-":  # only a command that has not landed, or a missing moto server, may leave a gap
            assert ((name.startswith("affected") or name in bench_run.resident.ROWS) and "not landed" in cells[8]) \
                or (name in bench_run.SHARED and "moto" in cells[8]), cells
            continue
        median, lo, hi = (float(c) for c in cells[1:4])
        assert 0 < lo <= median <= hi < 600, cells
        assert 0 < float(cells[7]) < 4096, cells  # peak RSS in MB
    # cold builds everything; a no-op rebuilds nothing; an edit rebuilds some
    assert rows["cold build, all bundles"][8] == "10 built, 0 cached of 10"
    assert rows["no-op rebuild"][8] == "0 built, 10 cached of 10"
    # the run's load average is on record
    assert re.search(r"Load average \(1 minute\) as each measured process started: median [0-9.]+, min [0-9.]+, max [0-9.]+\.", text)
    built = int(rows["edit 1 service file"][8].split()[0])
    assert 1 <= built < 10
    resident_edit = rows[bench_run.resident.EDIT]
    if resident_edit[1] != "-":  # its edit changes code: the warm child's fork runs the module again
        assert "discovery warm" in resident_edit[8], resident_edit
        assert 1 <= int(resident_edit[8].split()[0]) < 10, resident_edit
    fresh = rows[bench_run.SHARED[0]]
    if fresh[1] != "-":  # a fresh machine takes everything, discovery included, from the shared cache
        assert fresh[8] == "0 built, 10 cached of 10, discovery shared"


@pytest.mark.timeout(300)
def test_only_resident_runs_the_resident_rows_and_the_noop_is_answered_from_the_watch(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "BENCH.md"
    bench_run.main(["--sizes", "small", "--repeat", "1", "--only", "resident", "--out", str(out),
                    "--work", str(tmp_path / "work")])
    rows = {}
    for line in out.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 9 and cells[0] in bench_run.SCENARIOS and cells[1] != "-":
            rows[cells[0]] = cells
    assert set(rows) == {*bench_run.resident.ROWS, "python -c pass (process start)"}, rows
    noop = rows[bench_run.resident.NOOP][8]
    assert noop.startswith("0 built, 10 cached of 10") and noop.endswith("answered from its watch (no tree stat)"), noop
    assert rows[bench_run.resident.EDIT][8].split()[0] != "0"
