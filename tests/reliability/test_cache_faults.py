"""A damaged cache is detected and rebuilt, never served.

Each test builds a small repo once, damages one thing in the cache the way a
full disk, a bad sector or a killed process could, and checks that the next
build notices, rebuilds the same bytes, and leaves a cache that verifies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.repos import Cli, env_module, make_repo

pytestmark = pytest.mark.reliability("corrupted cache entries")


@pytest.fixture
def built(tmp_path) -> tuple[Cli, dict]:
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": env_module("a"), "pkg/b.py": env_module("b")})
    cli = Cli(root, tmp_path / "cache")
    first = cli.build()
    first.assert_ok()
    return cli, first.json()


def _target(doc: dict, name: str) -> dict:
    return next(t for t in doc["targets"] if t["target"] == name)


def _rebuilt_same(cli: Cli, first: dict, target: str) -> dict:
    again = cli.build()
    again.assert_ok()
    doc = again.json()
    assert again.digests() == {t["target"]: t["digest"] for t in first["targets"]}
    assert _target(doc, target)["status"] == "built", "the damaged entry was served from the cache"
    ver = cli.verify()
    assert ver.rc == 0, ver.describe()
    return doc


def test_corrupted_blob_is_reported_and_rebuilt(built):
    cli, first = built
    blob = Path(_target(first, "bundle:a")["path"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only hashing can tell
    blob.write_bytes(bytes(data))
    ver = cli.verify()
    assert ver.rc == 1 and blob.name in ver.out, ver.describe()
    doc = _rebuilt_same(cli, first, "bundle:a")
    assert doc["cache"]["corrupt"] == 1
    assert _target(doc, "bundle:b")["cached"] is True


def test_truncated_blob_is_rebuilt(built):
    cli, first = built
    blob = Path(_target(first, "bundle:a")["path"])
    blob.write_bytes(blob.read_bytes()[:10])
    _rebuilt_same(cli, first, "bundle:a")


def test_missing_blob_is_rebuilt(built):
    cli, first = built
    Path(_target(first, "bundle:a")["path"]).unlink()
    _rebuilt_same(cli, first, "bundle:a")


def test_truncated_action_entry_is_rebuilt(built):
    cli, first = built
    key = _target(first, "bundle:a")["key"]
    entry = cli.cache_dir / "ac" / key[:2] / f"{key}.json"
    entry.write_bytes(entry.read_bytes()[: len(entry.read_bytes()) // 2])
    ver = cli.verify()
    assert ver.rc == 1 and key in ver.out, ver.describe()
    _rebuilt_same(cli, first, "bundle:a")


def test_action_entry_for_another_key_is_not_served(built):
    """An entry copied under the wrong name (its key field disagrees) is a miss."""
    cli, first = built
    ka, kb = _target(first, "bundle:a")["key"], _target(first, "bundle:b")["key"]
    ea = cli.cache_dir / "ac" / ka[:2] / f"{ka}.json"
    eb = cli.cache_dir / "ac" / kb[:2] / f"{kb}.json"
    ea.write_bytes(eb.read_bytes())
    _rebuilt_same(cli, first, "bundle:a")


def test_gc_repairs_what_verify_reports(built):
    """`cache verify` tells the user to run `cache gc`; after it, verify passes."""
    cli, first = built
    blob = Path(_target(first, "bundle:a")["path"])
    blob.write_bytes(b"not a bundle")
    key = _target(first, "bundle:b")["key"]
    (cli.cache_dir / "ac" / key[:2] / f"{key}.json").write_text("{")
    ver = cli.run("cache", "verify")
    assert ver.rc == 1 and "cache gc" in ver.out, ver.describe()
    cli.run("cache", "gc").assert_ok()
    after = cli.verify()
    assert after.rc == 0, after.describe()
    _rebuilt_same(cli, first, "bundle:a")


def test_garbage_state_and_discovery_files_are_ignored(built):
    cli, first = built
    for p in list((cli.cache_dir / "state").rglob("*.json")) + list((cli.cache_dir / "discovery").glob("*.json")):
        p.write_text("{not json")
    again = cli.build()
    again.assert_ok()
    assert again.digests() == {t["target"]: t["digest"] for t in first["targets"]}
    assert cli.verify().rc == 0


def test_foreign_files_in_the_store_do_not_crash_verify_or_gc(built):
    """Stray files where the store expects directories (a sync tool, a user's
    `touch`) are reported or ignored, never an internal error."""
    cli, first = built
    (cli.cache_dir / "cas" / "sha256" / "README").write_text("stray")
    (cli.cache_dir / "ac" / "notes.txt").write_text("stray")
    ver = cli.verify()
    assert "internal error" not in ver.err and "Traceback" not in ver.err, ver.describe()
    cli.run("cache", "gc").assert_ok()
    cli.run("cache", "stats").assert_ok()
    again = cli.build()
    again.assert_ok()
    assert again.digests() == {t["target"]: t["digest"] for t in first["targets"]}
    json.loads(cli.verify().out)


def test_rebuild_replaces_a_corrupt_blob_whose_entry_is_gone(built):
    """Entry lost, blob garbled at the same size: the rebuilt entry must not
    name the garbled bytes (the store re-checks a blob it finds in place)."""
    cli, first = built
    rec = _target(first, "bundle:a")
    (cli.cache_dir / "ac" / rec["key"][:2] / f"{rec['key']}.json").unlink()
    blob = Path(rec["path"])
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF
    blob.write_bytes(bytes(data))
    _rebuilt_same(cli, first, "bundle:a")
    assert Path(rec["path"]).read_bytes() != bytes(data)
