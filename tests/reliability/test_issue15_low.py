"""The low and medium items of issue 15, each rerun: bad input is one clear
message and exit 2 (never an internal error), state files of the wrong shape
are ignored, crafted archives cannot write outside their destination, and
`cache gc --max-age-days 0` alongside builds does not break them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from flyte_build.archives import tarsafe
from tests.support.repos import Cli, env_module, make_repo

pytestmark = pytest.mark.reliability("issue 15: low and medium items")

BASE = {"pkg/__init__.py": "", "pkg/a.py": env_module("a")}


def _cli(tmp_path, files=None, extra="", **kw) -> Cli:
    return Cli(make_repo(tmp_path / "repo", {**BASE, **(files or {})}, pyproject_extra=extra, **kw), tmp_path / "cache")


def test_invalid_utf8_in_pyproject(tmp_path):
    cli = _cli(tmp_path, {"pyproject.toml": b'[project]\nname = "r\xffx"\nversion = "0.1.0"\n'})
    cli.run("build").assert_clean_error(2, "pyproject.toml", "not valid UTF-8")


def test_gitignore_line_ending_in_a_backslash(tmp_path):
    cli = _cli(tmp_path, {".gitignore": "ok.txt\nfoo\\\n"}, extra='copy-style = "all"')
    cli.run("build").assert_clean_error(2, ".gitignore:2", "invalid ignore pattern")


def test_backslash_in_a_file_name(tmp_path):
    cli = _cli(tmp_path, {"pkg/we\\ird.txt": "x"}, extra='copy-style = "all"')
    cli.run("build").assert_clean_error(2, "pkg/we\\ird.txt", "backslash")


def test_os_exit_at_import_names_the_module(tmp_path):
    cli = _cli(tmp_path, {"pkg/b.py": "import os\nos._exit(0)\n"})
    cli.run("build").assert_clean_error(2, "pkg.b", "pkg/b.py", "os._exit")


def test_py_symlink_out_of_the_root_is_not_shipped_by_loaded_modules(tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text("SECRET = 'outside the root'\n")
    cli = _cli(tmp_path, {"pkg/a.py": env_module("a", imports="from pkg import helper")})
    os.symlink(outside, cli.cwd / "pkg" / "helper.py")
    run = cli.build()
    run.assert_ok()
    rec = next(t for t in run.json()["targets"] if t["target"] == "bundle:a")
    with tarfile.open(rec["path"]) as tar:
        assert "pkg/helper.py" not in tar.getnames()
        assert not any(b"outside the root" in tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
    assert any("pkg/helper.py: symlink leads outside the root" in w for w in run.json()["warnings"])


SHAPES = ['[]', '"x"', '{"format": 2, "files": [], "parsed": 1, "extra": []}',
          '{"format": 2, "files": {"a": 5}, "parsed": {"x": 1}, "extra": {"edges": {"scope": [], "files": 3}}}',
          '{"key": 1, "doc": []}', '{"candidates": 5, "result": {"envs": 1}, "reads": []}']


def test_wrong_shaped_state_files_are_ignored(tmp_path):
    cli = _cli(tmp_path)
    first = cli.build()
    first.assert_ok()
    state = [p for p in cli.cache_dir.rglob("*.json") if "ac" not in p.relative_to(cli.cache_dir).parts]
    assert len(state) >= 3, state
    for p in state:
        good = p.read_bytes()
        for shape in SHAPES:
            p.write_text(shape)
            for args in (("build", "--json"), ("explain", "bundle:a"), ("cache", "stats")):
                run = cli.run(*args)
                assert run.rc == 0 and "internal error" not in run.err, f"{p.name} = {shape}\n{run.describe()}"
                if args[0] == "build":
                    assert run.digests() == first.digests()
            p.write_bytes(good)


def test_affected_since_a_commit_holding_a_symlink_out_of_the_root(tmp_path):
    cli = _cli(tmp_path)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=cli.cwd, check=True)
    subprocess.run([*git, "add", "-A"], cwd=cli.cwd, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=cli.cwd, check=True)
    os.symlink("/etc/passwd", cli.cwd / "pkg" / "passwd.txt")
    os.symlink("../../..", cli.cwd / "pkg" / "up")
    subprocess.run([*git, "add", "-A"], cwd=cli.cwd, check=True)
    subprocess.run([*git, "commit", "-qm", "links"], cwd=cli.cwd, check=True)
    (cli.cwd / "pkg" / "a.py").write_text(env_module("a") + "X = 1\n")
    for since in ("HEAD", "HEAD~1"):
        run = cli.run("affected", "--since", since, "--json")
        run.assert_ok()
        assert "bundle:a" in {t["target"] for t in run.json()["targets"]}
    build = cli.run("build", "--changed-since", "HEAD")
    build.assert_ok()


def test_out_replaces_a_same_size_corrupted_file(tmp_path):
    cli = _cli(tmp_path)
    out = tmp_path / "out"
    first = cli.build("--out", str(out))
    first.assert_ok()
    path = Path(next(t for t in first.json()["targets"] if t["target"] == "bundle:a")["path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    again = cli.build("--out", str(out))
    again.assert_ok()
    assert path.read_bytes() != bytes(data)
    import hashlib

    assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == first.digests()["bundle:a"]


def _tar(members) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, kind, arg in members:
            ti = tarfile.TarInfo(name)
            if kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, arg
                t.addfile(ti)
            elif kind == "hard":
                ti.type, ti.linkname = tarfile.LNKTYPE, arg
                t.addfile(ti)
            else:
                ti.size = len(arg)
                t.addfile(ti, io.BytesIO(arg))
    buf.seek(0)
    return tarfile.open(fileobj=buf)


@pytest.mark.parametrize("members", [
    [("d", "sym", "."), ("d/e", "sym", ".."), ("e/evil", "file", b"x")],
    [("a", "sym", "."), ("b", "sym", "a/../escaped"), ("b/evil", "file", b"x")],
    [("a", "sym", "sub"), ("a/evil", "file", b"x")],
    [("l", "sym", "/tmp"), ("l/evil", "file", b"x")],
    [("h", "hard", "../../etc/passwd")],
    [("../evil", "file", b"x")],
], ids=["chain", "target-through-link", "write-under-link", "absolute", "hardlink-out", "dotdot"])
def test_the_fallback_extractor_refuses_symlink_chains(tmp_path, members):
    dest = tmp_path / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(tarfile.ExtractError):
        tarsafe.fallback_extract(_tar(members), dest)
    assert not (tmp_path / "a" / "b" / "escaped").exists() and not (tmp_path / "a" / "evil").exists()
    assert not list((tmp_path / "a").rglob("evil"))


def test_the_fallback_extractor_keeps_safe_archives(tmp_path):
    tarsafe.fallback_extract(_tar([("sub/f", "file", b"x"), ("l", "sym", "sub/f")]), tmp_path)
    assert (tmp_path / "l").read_bytes() == b"x"


def test_gc_max_age_zero_alongside_builds(tmp_path):
    cli = _cli(tmp_path, {"pkg/b.py": env_module("b"), "pkg/c.py": env_module("c")})
    cli.build().assert_ok()
    for i in range(3):
        out = tmp_path / f"out{i}"
        builds = [cli.popen("build", "--out", str(out)) for _ in range(2)]
        gcs = [cli.run("cache", "gc", "--max-age-days", "0") for _ in range(2)]
        for proc in builds:
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr
            assert "corrupt" not in stderr
        assert all(g.rc == 0 for g in gcs), [g.describe() for g in gcs]
        assert len(list((out / "bundle").iterdir())) == 3
    assert cli.verify().rc == 0
    bad = cli.run("cache", "gc", "--max-age-days", "-1")
    assert bad.rc == 2 and "Traceback" not in bad.err


def test_gc_max_age_drops_state_left_by_gone_checkouts(tmp_path):
    """Every checkout (a CI clone, a temporary tree `affected` evaluates) leaves
    its discovery result and state in the cache; an age limit removes those not
    used for that long and keeps the recent checkout's, whose next build is
    still served from the cache."""
    old = _cli(tmp_path / "old")
    new = Cli(make_repo(tmp_path / "new" / "repo", {**BASE, "pkg/b.py": env_module("b")}), old.cache_dir)
    old.build().assert_ok()
    cache = old.cache_dir
    documents = ("discovery", "interpreters", "state", "logs")
    before = {p for d in documents for p in (cache / d).glob("*")}
    assert any(p.parent.name == "state" for p in before) and any(p.parent.name == "discovery" for p in before)
    month_ago = time.time() - 40 * 86400
    for p in before:
        for f in [p, *p.rglob("*")]:
            os.utime(f, (month_ago, month_ago), follow_symlinks=False)
    new.build().assert_ok()
    recent = {p for d in documents for p in (cache / d).glob("*")} - before
    assert any(p.parent.name == "state" for p in recent)

    gc = old.run("cache", "gc", "--max-age-days", "30", "--json")
    assert gc.rc == 0, gc.describe()
    left = {p for d in documents for p in (cache / d).glob("*")}
    gone = (before | recent) - left
    assert json.loads(gc.out)["removed"]["documents"] == len(gone)
    assert recent <= left and gone <= before
    # the old checkout's own state and discovery result went; what both used (the interpreter's answer) stayed
    assert {p.parent.name for p in gone} >= {"state", "discovery"}, sorted(map(str, gone))
    assert list((cache / "interpreters").glob("*"))
    # the entries and blobs were used today: both checkouts' builds are served from them
    for cli in (new, old):
        again = cli.build().assert_ok()
        assert {t["status"] for t in again.json()["targets"]} == {"cached"}, again.describe()
