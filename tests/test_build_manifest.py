"""The build manifest: a fresh machine reads every target's action entry from
one shared object (see flyte_build/stores/build_manifest.py), and each entry in it is
checked exactly as one read from `ac/<key>`; a manifest that does not hold is
read past, never trusted."""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from pathlib import Path

import pytest

from flyte_build.stores import signing
from tests.support.repos import Cli, env_module, make_repo

PRIVATE, PUBLIC = signing.keygen()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("manifest")
    files = {"pkg/__init__.py": "", "pkg/common.py": "X = 1\n"}
    for name in ("a", "b", "c"):
        files[f"pkg/{name}.py"] = env_module(name, imports="from pkg import common")
    return make_repo(base / "repo", files)


def _elsewhere(repo: Path, dest: Path) -> Path:
    """The same sources at another path: a fresh machine's checkout."""
    shutil.copytree(repo, dest)
    return dest


def _manifests(store: Path) -> list[Path]:
    return sorted((store / "manifest").rglob("*.json.gz"))


def _read(m: Path) -> dict:
    return json.loads(zlib.decompress(m.read_bytes()))


def _write(m: Path, doc: dict) -> None:
    m.write_bytes(zlib.compress(json.dumps(doc).encode()))


def _writer(repo: Path, tmp_path: Path, store: Path, env: dict | None = None) -> dict:
    first = Cli(repo, tmp_path / "a-cache", env={"CI": "true", **(env or {})}).build("--cache", f"file://{store}")
    first.assert_ok()
    return first.digests()


def _fresh(repo: Path, tmp_path: Path, name: str, store: Path, env: dict | None = None):
    checkout = _elsewhere(repo, tmp_path / name / "checkout")
    run = Cli(checkout, tmp_path / name / "cache", env={"CI": "", **(env or {})}).build("--cache", f"file://{store}")
    run.assert_ok()
    return run.json()


def _by_target(doc: dict) -> dict:
    return {t["target"]: t for t in doc["targets"]}


@pytest.mark.timeout(300)
def test_a_fresh_machine_takes_every_entry_from_the_manifest(repo, tmp_path):
    store = tmp_path / "store"
    want = _writer(repo, tmp_path, store)
    (m,) = _manifests(store)
    held = _read(m)["entries"]
    assert len(held) == len(want)
    # with no single entries left, the manifest alone serves the build
    shutil.rmtree(store / "ac")
    doc = _fresh(repo, tmp_path, "b", store)
    assert {t: r["digest"] for t, r in _by_target(doc).items()} == want
    assert all(r["source"] == "shared" for r in doc["targets"])
    # with no keys the reader discovers for itself (a shared discovery result is read
    # only when signed and verified); the bundles check against its own files
    assert doc["discovery"]["how"] == "full" and doc["warnings"] == []
    for r in doc["targets"]:  # `path` is a real local file with the bytes the digest names
        assert "sha256:" + hashlib.sha256(Path(r["path"]).read_bytes()).hexdigest() == r["digest"]


@pytest.mark.timeout(300)
def test_a_manifest_entry_under_another_key_is_read_past(repo, tmp_path):
    """Entries swapped between two keys fail the check a single entry gets (an
    entry must name the key it is read under): each is read from ac/ instead."""
    store = tmp_path / "store"
    want = _writer(repo, tmp_path, store)
    (m,) = _manifests(store)
    doc = _read(m)
    k1, k2 = sorted(doc["entries"])[:2]
    doc["entries"][k1], doc["entries"][k2] = doc["entries"][k2], doc["entries"][k1]
    _write(m, doc)
    got = _fresh(repo, tmp_path, "b", store)
    assert {t: r["digest"] for t, r in _by_target(got).items()} == want
    # and with ac/ gone too, those two are rebuilt (same bytes), never served swapped
    shutil.rmtree(store / "ac")
    got = _fresh(repo, tmp_path, "c", store)
    assert {t: r["digest"] for t, r in _by_target(got).items()} == want
    assert sorted(r["status"] for r in got["targets"]) == ["built", "built", "cached"]


@pytest.mark.timeout(300)
def test_an_unreadable_manifest_is_refused_and_replaced(repo, tmp_path):
    store = tmp_path / "store"
    want = _writer(repo, tmp_path, store)
    (m,) = _manifests(store)
    good = m.read_bytes()
    m.write_bytes(good[: len(good) // 2])
    got = _fresh(repo, tmp_path, "b", store)
    assert {t: r["digest"] for t, r in _by_target(got).items()} == want
    assert any("build manifest" in w and "refused" in w for w in got["warnings"]), got["warnings"]
    # a CI machine that meets it rewrites it
    ci = Cli(_elsewhere(repo, tmp_path / "ci" / "checkout"), tmp_path / "ci" / "cache", env={"CI": "true"})
    ci.build("--cache", f"file://{store}").assert_ok()
    assert _read(m)["entries"] == json.loads(zlib.decompress(good))["entries"]


@pytest.mark.timeout(300)
def test_with_verify_keys_an_unsigned_manifest_entry_is_refused(repo, tmp_path):
    """The signature check of a single entry applies to a manifest's: an
    unsigned copy is read past, the signed ac/ entry is used."""
    store = tmp_path / "store"
    want = _writer(repo, tmp_path, store, env={signing.SIGNING_KEY_ENV: PRIVATE})
    (m,) = _manifests(store)
    doc = _read(m)
    assert all(e["sig"]["key"] == PUBLIC for e in doc["entries"].values())
    for e in doc["entries"].values():
        del e["sig"]
    _write(m, doc)
    got = _fresh(repo, tmp_path, "b", store, env={signing.VERIFY_KEYS_ENV: PUBLIC})
    assert {t: r["digest"] for t, r in _by_target(got).items()} == want
    assert all(r["source"] == "shared" for r in got["targets"])
    shutil.rmtree(store / "ac")  # nothing signed left: all rebuilt, none taken unsigned
    got = _fresh(repo, tmp_path, "c", store, env={signing.VERIFY_KEYS_ENV: PUBLIC})
    assert {r["status"] for r in got["targets"]} == {"built"}
    assert {t: r["digest"] for t, r in _by_target(got).items()} == want


def test_blobs_fetched_ahead_are_the_built_targets_and_bounded_in_total():
    from flyte_build.stores.build_manifest import _wanted
    from flyte_build.stores.action_entry import ActionEntry, Output

    def entry(target: str, *sizes: int) -> ActionEntry:
        outs = tuple(Output(f"o{i}", hashlib.sha256(f"{target}{i}".encode()).hexdigest(), s) for i, s in enumerate(sizes))
        return ActionEntry(hashlib.sha256(target.encode()).hexdigest(), target, outs)

    entries = [entry("bundle:a", 10, 300), entry("bundle:b", 20), entry("bundle:other", 5)]
    got = _wanted(entries, {"bundle:a", "bundle:b"}, total=100)
    assert sorted(size for _, size in got) == [10, 20]  # not the 300 past the cap, nor a target not built
    with pytest.raises(ValueError, match="two entries for bundle:a"):
        _wanted([*entries, entry("bundle:a", 1)], {"bundle:a"})
