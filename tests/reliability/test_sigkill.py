"""SIGKILL at random moments of a build: the cache stays sound and the next
build gives the same digests as a clean one.

The repository is small but its bundles are not: four environments each
include a few MiB of incompressible data, so writing the archives and storing
the blobs takes long enough to be interrupted. Discovery is warmed once and
copied into each trial's cache, so a trial pays for the build, not for
importing flyte. Half the trials kill at a random delay after the start
(startup, state files, the first actions); the other half wait until the
build is visibly under way (a work directory or a temporary blob exists) and
kill a random moment later. The seed is printed so a failure can be replayed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.repos import Cli, env_module, make_repo

pytestmark = pytest.mark.reliability("SIGKILL during a build")

TRIALS = 20
ENVS = ("e1", "e2", "e3", "e4")
DATA_BYTES = 2 << 20
SEED = int(os.environ.get("FLYTE_BUILD_KILL_SEED", "1017"))


@dataclass(frozen=True)
class Lab:
    root: Path
    warm_cache: Path
    reference: dict[str, str]
    build_seconds: float


def _repo_files() -> tuple[dict, str]:
    rng = random.Random(7)
    files: dict[str, str | bytes] = {"pkg/__init__.py": ""}
    extra = []
    for name in ENVS:
        files[f"pkg/{name}.py"] = env_module(name, var=f"env_{name}")
        files[f"data/{name}/blob.bin"] = rng.randbytes(DATA_BYTES)
        files[f"data/{name}/notes.txt"] = f"notes for {name}\n"
        extra.append(f'[tool.hatch.build.targets.flyte.envs.{name}]\ninclude = ["data/{name}"]')
    return files, "jobs = 2\n" + "\n".join(extra)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    base = tmp_path_factory.mktemp("sigkill")
    files, extra = _repo_files()
    root = make_repo(base / "repo", files, pyproject_extra=extra)
    # the reference: a clean build in a cache of its own
    clean = Cli(root, base / "clean-cache").build()
    clean.assert_ok()
    reference = clean.digests()
    assert sorted(reference) == [f"bundle:{e}" for e in ENVS]
    # a cache holding discovery only (and the stat cache): what each trial starts from
    warm = base / "warm-cache"
    Cli(root, warm).run("targets").assert_ok()
    # how long a build from there takes, to place the kills
    timing = base / "timing-cache"
    shutil.copytree(warm, timing)
    t0 = time.monotonic()
    Cli(root, timing).build().assert_ok()
    return Lab(root, warm, reference, time.monotonic() - t0)


def _under_way(cache: Path) -> bool:
    """A build has started writing: a work directory or a temporary blob exists."""
    tmp = cache / "tmp"
    if tmp.is_dir() and any(tmp.iterdir()):
        return True
    cas = cache / "cas" / "sha256"
    return cas.is_dir() and any(True for _ in cas.rglob(".tmp-*"))


def _stored(cache: Path) -> tuple[int, int]:
    ac = cache / "ac"
    cas = cache / "cas" / "sha256"
    n_ac = sum(1 for p in ac.rglob("*.json") if not p.name.startswith(".tmp-")) if ac.is_dir() else 0
    n_blob = sum(1 for p in cas.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")) if cas.is_dir() else 0
    return n_ac, n_blob


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_then_verify_and_rebuild(lab, tmp_path, trial):
    rng = random.Random(SEED * 1000 + trial)
    cache = tmp_path / "cache"
    shutil.copytree(lab.warm_cache, cache)
    cli = Cli(lab.root, cache)
    proc = cli.popen("build", "--json")
    deadline = time.monotonic() + 30
    if trial % 2 == 0:
        time.sleep(rng.uniform(0.05, lab.build_seconds * 1.1))
    else:
        while not _under_way(cache) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, lab.build_seconds * 0.6))
    finished_first = proc.poll() is not None
    if not finished_first:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    n_ac, n_blob = _stored(cache)
    print(f"seed={SEED} trial={trial} finished_before_kill={finished_first} stored: {n_ac} actions, {n_blob} blobs")

    # the cache a killed build leaves behind is sound ...
    ver = cli.verify()
    assert ver.rc == 0 and ver.json()["ok"], ver.describe()
    # ... no action entry names a blob that is not there, and no temp file carries a real name
    for p in (cache / "cas" / "sha256").rglob("*") if (cache / "cas").is_dir() else ():
        if p.is_file() and not p.name.startswith(".tmp-"):
            assert len(p.name) == 64, f"a non-blob name in the store: {p}"
    # ... and the next build gives exactly the clean build's digests
    again = cli.build()
    again.assert_ok()
    assert again.digests() == lab.reference, again.describe()
    ver2 = cli.verify()
    assert ver2.rc == 0 and ver2.json()["ok"], ver2.describe()


def test_gc_clears_what_killed_builds_leave(lab, tmp_path):
    """Kill a build mid-way, age its leftovers past gc's grace period: gc removes
    every temporary file and work directory, and the cache still verifies."""
    cache = tmp_path / "cache"
    shutil.copytree(lab.warm_cache, cache)
    cli = Cli(lab.root, cache)
    proc = cli.popen("build", "--json")
    deadline = time.monotonic() + 30
    while not _under_way(cache) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    old = time.time() - 2 * 3600
    for dirpath, dirs, files in os.walk(cache):
        for n in dirs + files:
            os.utime(os.path.join(dirpath, n), (old, old))
    cli.run("cache", "gc").assert_ok()
    leftovers = [str(p.relative_to(cache)) for p in cache.rglob("*") if p.name.startswith(".tmp-")]
    tmp = cache / "tmp"
    leftovers += [str(p.relative_to(cache)) for p in tmp.iterdir()] if tmp.is_dir() else []
    assert leftovers == [], f"gc left what a killed build wrote: {leftovers}"
    assert cli.verify().rc == 0
    again = cli.build()
    again.assert_ok()
    assert again.digests() == lab.reference
