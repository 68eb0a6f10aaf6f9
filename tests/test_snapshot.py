"""The whole-build snapshot: a no-op `build --json` answered from recorded
stats, and every change that must send the build down the normal path."""

from __future__ import annotations

import os
import time

import pytest

from tests.support.cli import build_json, digests, flyte_build


def _states(doc: dict) -> dict:
    return {t["target"]: (t["digest"], t["status"]) for t in doc["targets"]}


@pytest.mark.timeout(240)
def test_snapshot_answers_a_noop_and_steps_aside_for_any_change(repo, tmp_path):
    cache = tmp_path / "cache"
    time.sleep(2.1)  # the copied tree's ctimes leave the racy window
    first = build_json(repo, cache)
    assert first["discovery"]["how"] == "full"

    again = build_json(repo, cache)
    assert again["discovery"]["how"] == "snapshot"
    assert digests(again) == digests(first)
    assert all(t["status"] == "cached" and t["cached"] for t in again["targets"])
    assert again["cache"]["local_hits"] == len(again["targets"])

    # the answer comes before argparse, json, discovery or the engine are imported
    # build_json's environment (tests/support/cli.py), so the snapshot's key matches
    proc = flyte_build("build", "--json", cwd=repo, cache=cache, python_flags=("-X", "importtime"), timeout=120)
    assert proc.rc == 0 and '"how": "snapshot"' in proc.out
    imported = {line.split("|")[-1].strip() for line in proc.err.splitlines() if line.startswith("import time:")}
    assert "flyte_build.stores.snapshot" in imported
    assert not imported & {"argparse", "json", "hashlib", "flyte_build.discovery.discover", "flyte_build.engine.executor", "flyte"}

    # a flag or a variable the snapshot was not taken with: the normal path
    assert build_json(repo, cache, "--jobs", "1")["discovery"]["how"] == "cached"
    assert build_json(repo, cache, env={"FLYTE_BUILD_SNAPSHOT_TEST": "1"})["discovery"]["how"] == "cached"

    # a blob gone from the cache: rebuilt with the same bytes, never served from the snapshot
    rec = next(t for t in first["targets"] if t["target"] == "bundle:inference")
    (cache / "cas" / "sha256" / rec["digest"][7:9] / rec["digest"][7:]).unlink()
    healed = build_json(repo, cache)
    assert healed["discovery"]["how"] != "snapshot"
    assert _states(healed)["bundle:inference"] == (rec["digest"], "built")
    assert build_json(repo, cache)["discovery"]["how"] == "snapshot"

    # an edited module, same size and mtime restored: the ctime still tells
    lib = repo / "libs" / "mlkit" / "model.py"
    st = lib.stat()
    text = lib.read_text()
    lib.write_text(text.replace("def ", "def _", 1) if "def " in text else text + "#")
    os.utime(lib, ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = build_json(repo, cache)
    assert edited["discovery"]["how"] != "snapshot"
    assert any(t["status"] == "built" for t in edited["targets"])

    # a new module with a new environment in a walked directory
    (repo / "services" / "inference" / "extra.py").write_text(
        "import flyte\n\nextra_env = flyte.TaskEnvironment(name='snapshot_extra')\n\n\n"
        "@extra_env.task\nasync def one() -> int:\n    return 1\n")
    added = build_json(repo, cache)
    assert added["discovery"]["how"] != "snapshot"
    assert "bundle:snapshot_extra" in digests(added)

    # a bundle of copy-style `all` (reporting) holds every file: a new data file anywhere changes it
    time.sleep(2.1)
    settled = build_json(repo, cache)
    assert build_json(repo, cache)["discovery"]["how"] == "snapshot"
    (repo / "libs" / "common" / "notes.txt").write_text("new data\n")
    more = build_json(repo, cache)
    assert more["discovery"]["how"] != "snapshot"
    assert digests(more)["bundle:reporting"] != digests(settled)["bundle:reporting"]
