"""`affected --since REV` on a fresh machine: the revision's target summary
comes from the shared cache (flyte_build/stores/shared_affected.py), checked like any
shared entry, and the answer is the one the revision evaluated here gives."""

from __future__ import annotations

import json
import os
import subprocess
import zlib
from pathlib import Path

import pytest

from flyte_build.stores import signing
from tests.support.gitrepo import GIT_ENV
from tests.support.repos import Cli, env_module, make_repo

PRIVATE, PUBLIC = signing.keygen()


def _git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """Two envs on a shared library; the head commit edits env a's module."""
    base = tmp_path_factory.mktemp("shared-affected")
    files = {"pkg/__init__.py": "", "pkg/common.py": "X = 1\n"}
    for name in ("a", "b"):
        files[f"pkg/{name}.py"] = env_module(name, imports="from pkg import common")
    repo = make_repo(base / "origin", files)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    with open(repo / "pkg" / "a.py", "a") as f:
        f.write("\nY = 2\n")
    _git(repo, "commit", "-q", "-am", "head: edit a")
    return repo


def _machine(origin: Path, tmp_path: Path, name: str, env: dict | None = None) -> Cli:
    """A fresh machine: its own clone at its own path, an empty local cache."""
    checkout = tmp_path / name / "checkout"
    checkout.parent.mkdir(parents=True)
    _git(checkout.parent, "clone", "-q", str(origin), str(checkout))
    # a protected-branch CI machine: it signs what it publishes and verifies what it reads
    keys = {signing.SIGNING_KEY_ENV: PRIVATE, signing.VERIFY_KEYS_ENV: PUBLIC}
    return Cli(checkout, tmp_path / name / "cache", env={"CI": "true", **keys, **(env or {})})


def _affected(cli: Cli, store: Path) -> dict:
    run = cli.run("--cache", f"file://{store}", "affected", "--since", "HEAD~1", "--json", timeout=240)
    assert run.rc == 0, run.err
    return run.json()


def _answer(doc: dict) -> tuple:
    return doc["commit"], [t["target"] for t in doc["targets"]], doc["envs"], doc["removed"]


def _summaries(store: Path) -> list[Path]:
    return sorted((store / "affected").rglob("*.json.gz"))


@pytest.mark.timeout(300)
def test_a_fresh_machine_reads_the_revision_from_the_shared_cache(origin, tmp_path):
    store = tmp_path / "store"
    first = _affected(_machine(origin, tmp_path, "a"), store)
    assert first["rev_cached"] is False
    assert [e["env"] for e in first["envs"]] == ["a"]
    (summary,) = _summaries(store)

    again = _affected(_machine(origin, tmp_path, "b"), store)
    assert again["rev_cached"] is True and again["warnings"] == []
    assert _answer(again) == _answer(first)

    # a summary that does not parse: refused with a warning, the revision evaluated here, same answer
    good = summary.read_bytes()
    summary.write_bytes(good[: len(good) // 2])
    bad = _affected(_machine(origin, tmp_path, "c"), store)
    assert bad["rev_cached"] is False
    assert any("refused" in w and "affected summary" in w for w in bad["warnings"]), bad["warnings"]
    assert _answer(bad) == _answer(first)
    assert summary.read_bytes() == good  # and the CI machine that met it put it right

    # a well-formed summary of the wrong shape (a target record cut short) is refused too
    doc = json.loads(zlib.decompress(good))
    addr = next(iter(doc["snapshot"]["targets"]))
    doc["snapshot"]["targets"][addr] = doc["snapshot"]["targets"][addr][:3]
    summary.write_bytes(zlib.compress(json.dumps(doc).encode()))
    bad = _affected(_machine(origin, tmp_path, "d"), store)
    assert bad["rev_cached"] is False and _answer(bad) == _answer(first)


@pytest.mark.timeout(300)
def test_with_verify_keys_only_a_signed_summary_is_used(origin, tmp_path):
    store = tmp_path / "store"
    first = _affected(_machine(origin, tmp_path, "a"), store)
    reader = {"CI": "", signing.SIGNING_KEY_ENV: None, signing.VERIFY_KEYS_ENV: PUBLIC}
    used = _affected(_machine(origin, tmp_path, "b", reader), store)
    assert used["rev_cached"] is True and _answer(used) == _answer(first)
    # the signature stripped: refused by a reader holding the key
    (summary,) = _summaries(store)
    doc = json.loads(zlib.decompress(summary.read_bytes()))
    doc.pop("sig")
    summary.write_bytes(zlib.compress(json.dumps(doc).encode()))
    refused = _affected(_machine(origin, tmp_path, "c", reader), store)
    assert refused["rev_cached"] is False
    assert any("affected summary" in w and "unsigned" in w for w in refused["warnings"]), refused["warnings"]
    assert _answer(refused) == _answer(first)
    # a reader without keys does not read summaries at all (hole 1): no refusal, its own answer
    keyless = {"CI": "", signing.SIGNING_KEY_ENV: None, signing.VERIFY_KEYS_ENV: None}
    own = _affected(_machine(origin, tmp_path, "d", keyless), store)
    assert own["rev_cached"] is False and own["warnings"] == [] and _answer(own) == _answer(first)
