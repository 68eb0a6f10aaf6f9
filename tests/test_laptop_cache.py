"""A laptop beside CI: CI publishes to the shared cache, a laptop reads it and
by default publishes nothing -- and says so once on stderr, with how to publish."""

from __future__ import annotations

import pytest

from tests.support.cli import copy_sample, flyte_build

pytestmark = pytest.mark.timeout(300)
NOTE = "flyte-build: note:"


def test_laptop_reads_what_ci_published_and_says_it_will_not_publish(tmp_path):
    shared = tmp_path / "shared"
    ci, laptop = copy_sample(tmp_path / "ci"), copy_sample(tmp_path / "laptop")

    def run(where, cache, *args, env=None):
        return flyte_build("--cache", str(shared), *args, "build", "--json", cwd=where, cache=tmp_path / cache,
                           env={"CI": None, **(env or {})}, in_process=True)

    a = run(ci, "cache-ci", env={"CI": "true"})
    assert a.rc == 0, a.err
    assert NOTE not in a.err  # CI publishes
    assert {t["status"] for t in a.json()["targets"]} == {"built"} and len(a.json()["targets"]) == 6

    b = run(laptop, "cache-laptop")
    assert b.rc == 0, b.err
    assert [(t["status"], t["source"]) for t in b.json()["targets"]] == [("cached", "shared")] * 6
    notes = [line for line in b.err.splitlines() if line.startswith(NOTE)]
    assert len(notes) == 1, b.err
    assert str(shared) in notes[0] and "not in CI" in notes[0] and "--cache-write" in notes[0]

    # told either way, nothing to say; --cache-write on the laptop publishes
    assert NOTE not in run(laptop, "cache-laptop", "--cache-read-only").err
    change = "\n# tuned on the laptop\n"
    with open(laptop / "services" / "inference" / "tasks.py", "a") as f:
        f.write(change)
    c = run(laptop, "cache-laptop", "--cache-write")
    assert c.rc == 0 and NOTE not in c.err, c.err
    assert {t["target"]: t["status"] for t in c.json()["targets"]}["bundle:inference"] == "built"
    # what the laptop published with --cache-write, another machine with the same change finds
    other = copy_sample(tmp_path / "other")
    with open(other / "services" / "inference" / "tasks.py", "a") as f:
        f.write(change)
    d = run(other, "cache-other")
    assert [(t["status"], t["source"]) for t in d.json()["targets"]] == [("cached", "shared")] * 6
