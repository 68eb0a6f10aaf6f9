"""Same sources, same bytes: across checkout paths, processes, PYTHONHASHSEEDs and caches."""

from __future__ import annotations

import gzip
import os
import tarfile
import time
from pathlib import Path

from tests.support.cli import build_json, copy_sample, digests


def test_two_checkouts_different_seeds_and_caches_give_identical_digests(tmp_path):
    a = copy_sample(tmp_path / "one" / "checkout")
    b = copy_sample(tmp_path / "elsewhere" / "deeper" / "other-checkout")
    # different mtimes too: the archive must not care
    later = time.time() + 86400 * 3
    for p in b.rglob("*"):
        os.utime(p, (later, later))
    da = digests(build_json(a, tmp_path / "cache-a", env={"PYTHONHASHSEED": "1"}))
    db = digests(build_json(b, tmp_path / "cache-b", env={"PYTHONHASHSEED": "4242"}))
    assert len(da) == 6
    assert da == db


def test_archive_is_normalised(tmp_path):
    repo = copy_sample(tmp_path / "repo")
    os.chmod(repo / "services/preprocessing/tasks.py", 0o775)  # an executable bit survives as 0755
    doc = build_json(repo, tmp_path / "cache")
    assert "bundle:preprocessing" in digests(doc) and len(doc["targets"]) == 6, doc["targets"]
    for rec in doc["targets"]:
        raw = Path(rec["path"]).read_bytes()
        assert raw[:2] == b"\x1f\x8b"
        assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
        assert raw[3] & 0x08 == 0  # no file name in the gzip header
        with tarfile.open(rec["path"]) as tar:
            members = tar.getmembers()
        names = [m.name for m in members]
        files = [m for m in members if m.isfile()]
        assert names == sorted(names)  # every member, directories too, in name order
        for m in members:
            assert not m.name.startswith("/") and ".." not in m.name.split("/")
            assert m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == ""
            assert m.mode in (0o644, 0o755)
        modes = {m.name: m.mode for m in files}
        if rec["target"] == "bundle:preprocessing":
            assert modes["services/preprocessing/tasks.py"] == 0o755
        # the one executable file is the only 0755 member, wherever it ships
        assert {n for n, mode in modes.items() if mode == 0o755} <= {"services/preprocessing/tasks.py"}
        assert gzip.decompress(raw)  # a valid stream


def test_task_spec_keys_do_not_depend_on_this_machines_path(tmp_path):
    """flyte's config lookup reads PATH (to run git) and HOME while a module
    builds its Image; those values are this machine's and this virtualenv's, so
    the specs keys (what a shared cache matches on) must not include them."""
    import sys

    from tests.support.cli import flyte_build

    def key(where: str, path: str) -> str:
        repo = copy_sample(tmp_path / where / "repo")
        report = flyte_build("explain", "specs:inference", "--json", cwd=repo, cache=tmp_path / where / "cache",
                             env={"PATH": path}).assert_ok().json()
        return report["key"]

    here = os.path.dirname(sys.executable)
    assert key("a", f"{here}:/usr/local/bin:/usr/bin:/bin") == key("b", f"/opt/elsewhere/bin:{here}:/usr/bin:/bin")


def test_task_spec_keys_do_not_depend_on_the_users_home(tmp_path):
    """flyte looks for ~/.flyte/config.yaml and ~/.union/config.yaml; the witness
    names them relative to the home directory, so two users (CI's and a
    developer's) get the same specs keys for the same sources."""
    from tests.support.cli import flyte_build

    def key(where: str) -> str:
        home = tmp_path / where / "home"
        home.mkdir(parents=True)
        repo = copy_sample(tmp_path / where / "repo")
        report = flyte_build("explain", "specs:inference", "--json", cwd=repo, cache=tmp_path / where / "cache",
                             env={"HOME": str(home)}).assert_ok().json()
        return report["key"]

    assert key("alice") == key("bob")
