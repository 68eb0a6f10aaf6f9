"""A no-op through the resident process: its inotify watch on the repository
(flyte_build/daemon/tree_watch.py) lets the thin client answer a no-op
`build --json` without statting the tree (daemon/noop_answers.py), and every
change to the tree is seen. Real daemons, real files, real inotify; the
daemon's `noop_answers` counter (in `daemon status --json`) says whether a
no-op was answered without a stat."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.support.cli import age_tree, flyte_build
from tests.support.processes import wait_gone

pytestmark = pytest.mark.timeout(300)

APP = """\
import flyte

import helper

env = flyte.TaskEnvironment(name="watched")


@env.task
async def hello(x: int) -> int:
    return helper.VALUE + x
"""
PYPROJECT = '[project]\nname = "watched-demo"\nversion = "0.1.0"\n'
NO_CI = {"CI": None, "FLYTE_BUILD_DAEMON": None}
RACY = 2.1  # a snapshot is recorded only for files older than this (see stores.snapshot)


class Repo:
    def __init__(self, root: Path, env: dict | None = None, cache: Path | None = None):
        self.repo, self.cache, self.env = root / "repo", cache or root / "cache", {**NO_CI, **(env or {})}
        self.changed_at = time.time()
        self.repo.mkdir(parents=True)
        self.write("pyproject.toml", PYPROJECT)
        self.write("app.py", APP)
        self.write("helper.py", "VALUE = 1\n")
        self.write("extra.py", "X = 1\n")
        self.write("notes.txt", "notes\n")
        age_tree(self.repo)

    def write(self, rel: str, text: str) -> None:
        path = self.repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.changed_at = time.time()

    def run(self, *args: str):
        return flyte_build(*args, cwd=self.repo, cache=self.cache, env=self.env)

    def build(self) -> dict:
        return self.run("build", "--json").assert_ok().json()

    def alone(self) -> dict:
        """The same build in a process of its own, with no resident process."""
        return self.run("--no-daemon", "build", "--json").assert_ok().json()

    def status(self) -> dict:
        return self.run("daemon", "status", "--json").assert_ok().json()

    def answered(self) -> int:
        return self.status()["watch"]["noop_answers"]

    def arm(self) -> dict:
        """Past the racy window: a build that records its snapshot, then no-ops
        until the daemon answers one without a stat (the first stats and sets
        the watches beyond the tree, the next stats once more with them set)."""
        time.sleep(max(0.0, self.changed_at + RACY - time.time()))
        self.build()
        verified = self.build()
        before = self.answered()
        for _ in range(3):
            fast = self.build()
            if self.answered() > before:
                break
        assert self.answered() == before + 1, self.status()["watch"]
        assert fast == verified
        return fast


def _same(doc: dict, alone: dict) -> None:
    strip = lambda d: [{k: v for k, v in t.items() if k not in ("seconds", "status", "cached", "source")} for t in d["targets"]]
    assert strip(doc) == strip(alone)


def _seen(r: Repo) -> dict:
    """The next no-op after a change: answered by a build, not from the watch,
    with what a build without the resident process says."""
    before = r.answered()
    doc = r.build()
    assert r.answered() == before, "a changed tree was answered without a stat"
    _same(doc, r.alone())
    return doc


@pytest.fixture
def repo(tmp_path):
    r = Repo(tmp_path / "d")
    yield r
    r.run("daemon", "stop")


def _digest(doc: dict) -> str:
    (target,) = doc["targets"]
    return target["digest"]


@pytest.mark.slow
def test_a_noop_is_answered_without_a_stat_and_every_kind_of_change_is_seen(repo):
    first = repo.build()  # starts the resident process, whose watch is set up before its socket
    armed = repo.arm()
    assert _digest(armed) == _digest(first)
    # the client that answers it imports what Python loads at start and five small modules of ours
    before = repo.answered()
    run = flyte_build("build", "--json", cwd=repo.repo, cache=repo.cache, env=repo.env, python_flags=("-X", "importtime"))
    assert run.assert_ok().json() == armed and repo.answered() == before + 1
    imported = {line.rsplit("|", 1)[1].strip() for line in run.err.splitlines() if line.startswith("import time:")}
    assert {m for m in imported if m.startswith("flyte_build")} == {
        "flyte_build", "flyte_build.__about__", "flyte_build.cli", "flyte_build.daemon", "flyte_build.daemon.client",
        "flyte_build.daemon.address", "flyte_build.daemon.protocol", "flyte_build.stores",
        "flyte_build.stores.cache_dir", "flyte_build.stores.snapshot"}
    # (`re` and `enum` come with this interpreter's site hooks, see BENCHMARKS.md)
    assert not imported & {"json", "socket", "signal", "argparse", "rich", "hashlib", "tomllib", "ctypes"}
    # an edit of an imported module: a new bundle
    repo.write("helper.py", "VALUE = 2\n")
    edited = _seen(repo)
    assert _digest(edited) != _digest(first)
    repo.arm()
    # an editor's save: a temporary file renamed over the module
    tmp = repo.repo / ".helper.py.tmp"
    tmp.write_text("VALUE = 3\n")
    os.replace(tmp, repo.repo / "helper.py")
    repo.changed_at = time.time()
    saved = _seen(repo)
    assert _digest(saved) not in (_digest(first), _digest(edited))
    # a rename, a delete and an added file, each on its own
    for change in (lambda: (repo.repo / "notes.txt").rename(repo.repo / "notes2.txt"),
                   lambda: (repo.repo / "extra.py").unlink(),
                   lambda: repo.write("added.py", "Y = 1\n")):
        repo.arm()
        change()
        repo.changed_at = time.time()
        assert _digest(_seen(repo)) == _digest(saved)


@pytest.mark.slow
def test_a_directory_made_after_the_watch_started_is_watched_and_a_quick_edit_is_seen(repo):
    repo.build()
    repo.write("pkg2/__init__.py", "")
    repo.write("pkg2/mod.py", "VALUE = 10\n")
    repo.write("helper.py", "from pkg2.mod import VALUE\n")
    with_pkg = _seen(repo)
    assert repo.status()["watch"]["dirs"] == 2  # the root and pkg2, watched since it was made
    assert "watching 2 directories" in repo.run("daemon", "status").assert_ok().out
    repo.arm()
    repo.write("pkg2/mod.py", "VALUE = 11\n")  # a file in the new directory
    edited = _seen(repo)
    assert _digest(edited) != _digest(with_pkg)
    repo.arm()
    # an edit right after an answered no-op, and the next command at once
    repo.write("pkg2/mod.py", "VALUE = 12\n")
    quick = _seen(repo)
    assert _digest(quick) not in (_digest(with_pkg), _digest(edited))


@pytest.mark.slow
def test_an_overflowed_event_queue_falls_back_to_the_stat_path(repo):
    repo.build()
    armed = repo.arm()
    pid = repo.status()["pid"]
    a, b = repo.repo / "a.txt", repo.repo / "b.txt"
    a.write_text("a")
    b.write_text("b")
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    os.kill(pid, signal.SIGSTOP)  # nothing reads the queue: the kernel drops events past its limit
    try:
        for i in range(limit // 2 + 100):  # alternating, so no two queued events merge
            os.utime(a, (i, i))
            os.utime(b, (i, i))
        repo.write("helper.py", "VALUE = 5\n")
    finally:
        os.kill(pid, signal.SIGCONT)
    doc = _seen(repo)
    assert _digest(doc) != _digest(armed)
    watch = repo.status()["watch"]
    assert watch["resets"] == 1 and "overflowed" in watch["last_reset"], watch
    # and the watch works again afterwards
    repo.arm()
    repo.write("helper.py", "VALUE = 6\n")
    assert _digest(_seen(repo)) != _digest(doc)


@pytest.mark.slow
def test_a_watch_that_cannot_be_set_up_leaves_every_noop_to_the_stat_path(tmp_path):
    r = Repo(tmp_path / "d", env={"FLYTE_BUILD_WATCH_MAX_DIRS": "0"})
    try:
        r.build()
        time.sleep(RACY)
        docs = [r.build() for _ in range(3)]
        watch = r.status()["watch"]
        assert watch["failed"] == "more than 0 directories to watch" and watch["noop_answers"] == 0, watch
        docs += [r.build()]
        assert docs[1] == docs[2] == docs[3] and docs[1]["discovery"]["how"] == "snapshot"
        _same(docs[0], docs[1])
        r.write("helper.py", "VALUE = 7\n")
        _seen(r)
        assert any("not watching" in p.read_text() for p in (r.cache / "daemon").glob("*.log"))
        assert "not watching the repository (more than 0 directories to watch)" in r.run("daemon", "status").assert_ok().out
    finally:
        r.run("daemon", "stop")


@pytest.mark.slow
def test_killing_the_resident_process_loses_no_change(repo):
    repo.build()
    armed = repo.arm()
    pid = repo.status()["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid, 15)
    repo.write("helper.py", "VALUE = 8\n")
    doc = repo.build()  # no resident process: the client stats, sees the edit, builds (and starts another)
    _same(doc, repo.alone())
    assert _digest(doc) != _digest(armed)
    assert repo.status()["pid"] != pid


@pytest.mark.slow
def test_a_new_checkout_put_where_a_renamed_parent_was_is_seen(tmp_path):
    # the repository's parent renamed and a changed copy put in its place: no
    # event in any watched directory, only the parent's own move
    r = Repo(tmp_path / "d" / "src", cache=tmp_path / "d" / "cache")
    try:
        r.build()
        armed = r.arm()
        (tmp_path / "d" / "src").rename(tmp_path / "d" / "src-old")
        shutil.copytree(tmp_path / "d" / "src-old", tmp_path / "d" / "src", symlinks=True)
        r.write("helper.py", "VALUE = 9\n")
        assert _digest(_seen(r)) != _digest(armed)
        r.arm()  # the new checkout is watched
        r.write("helper.py", "VALUE = 10\n")
        _seen(r)
    finally:
        r.run("daemon", "stop")
