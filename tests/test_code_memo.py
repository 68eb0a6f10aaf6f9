"""The code discovery's parent compiled, kept between runs (flyte_build/discovery/code_memo.py):
an edit compiles only the files it changed, the child gets exactly the code a fresh
compile gives, a memo file that is not exactly what we wrote is ignored whole, and a
discovery with the memo equals one with an empty cache, byte for byte."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bench.generate import Shape, generate
from flyte_build.config import settings as config_mod
from flyte_build.discovery import code as discovery_code
from flyte_build.discovery import code_memo as discovery_memo
from flyte_build.discovery.code_prints import code_print
from flyte_build.discovery.discover import Selection, discover
from flyte_build.stores.file_digests import FileDigests
from flyte_build.stores.local_store import LocalStore

pytestmark = pytest.mark.timeout(300)

FILES = {"pkg/__init__.py": "", "pkg/a.py": "import os\nA = 1\n", "pkg/b.py": "from pkg import a\nB = a.A + 1\n",
         "c.py": "def f():\n    return 3\n"}


@pytest.fixture
def compiled(monkeypatch) -> list[str]:
    """The files discovery's parent compiles (its `compile` builtin, watched)."""
    seen: list[str] = []

    def watched(source, filename, *args, **kwargs):
        seen.append(filename)
        return compile(source, filename, *args, **kwargs)

    monkeypatch.setattr(discovery_code, "compile", watched, raising=False)
    return seen


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _hand(root: Path, tmp: Path, digests: FileDigests, memo_path: Path) -> tuple[str, discovery_memo.CodeMemo]:
    """One handing-over as discovery's parent does it, from and into the memo at `memo_path`."""
    rels = sorted(str(p.relative_to(root)) for p in root.rglob("*.py"))
    stream = tmp / f"stream-{len(list(tmp.glob('stream-*')))}"
    stream.write_bytes(b"")
    memo = discovery_memo.CodeMemo(memo_path)
    discovery_code.prefetch(root, rels, digests, str(stream), None, memo)
    memo.save({rel: digests.digest(root / rel)[0] for rel in rels})
    digests.save()  # the import records, kept with the stat cache
    return str(stream), memo


def _taken(root: Path, stream: str, rel: str):
    path = os.path.join(os.path.realpath(root), rel)
    return discovery_code.Handed(stream, os.path.realpath(root)).take(path, Path(path).read_bytes(), -1)


def test_an_edit_compiles_only_the_file_it_changed_and_the_child_gets_fresh_code(tmp_path, compiled):
    root = _tree(tmp_path / "root", FILES)
    digests = FileDigests(tmp_path / "state", str(root))
    memo_path = discovery_memo.path_for(tmp_path / "state", root)
    _hand(root, tmp_path, digests, memo_path)
    assert sorted(os.path.basename(f) for f in compiled) == ["__init__.py", "a.py", "b.py", "c.py"]

    del compiled[:]
    (root / "pkg/b.py").write_text("from pkg import a\nB = a.A + 2\n")
    digests = FileDigests(tmp_path / "state", str(root))  # the next run: stat cache and memo from disk
    stream, memo = _hand(root, tmp_path, digests, memo_path)
    assert [os.path.relpath(f, os.path.realpath(root)) for f in compiled] == ["pkg/b.py"]
    assert memo.hits == 3
    for rel in FILES:  # every module is handed over, each exactly as compiling its bytes now gives it
        path = os.path.join(os.path.realpath(root), rel)
        fresh = compile(Path(path).read_bytes(), path, "exec", dont_inherit=True, optimize=0)
        code, printed = _taken(root, stream, rel)
        assert code == fresh and printed == code_print(fresh), rel


def test_an_edit_rewrites_only_its_directorys_part_of_the_memo(tmp_path):
    root = _tree(tmp_path / "root", FILES)
    digests = FileDigests(tmp_path / "state", str(root))
    memo_path = discovery_memo.path_for(tmp_path / "state", root)
    _hand(root, tmp_path, digests, memo_path)
    before = {p.name: p.stat().st_ino for p in memo_path.iterdir()}
    assert len(before) == 2  # the root's files and pkg's
    (root / "c.py").write_text("def f():\n    return 4\n")
    _hand(root, tmp_path, FileDigests(tmp_path / "state", str(root)), memo_path)
    after = {p.name: p.stat().st_ino for p in memo_path.iterdir()}
    assert after.keys() == before.keys() and len({n for n in after if after[n] != before[n]}) == 1


def test_the_memo_keeps_only_the_files_of_the_last_discovery(tmp_path):
    root = _tree(tmp_path / "root", FILES)
    digests = FileDigests(tmp_path / "state", str(root))
    memo_path = discovery_memo.path_for(tmp_path / "state", root)
    _hand(root, tmp_path, digests, memo_path)
    (root / "c.py").unlink()
    (root / "pkg/a.py").write_text("A = 5\n")
    digests = FileDigests(tmp_path / "state", str(root))
    _hand(root, tmp_path, digests, memo_path)
    kept = discovery_memo.stored(memo_path)
    assert sorted(kept) == ["pkg/__init__.py", "pkg/a.py", "pkg/b.py"]
    assert kept["pkg/a.py"][0] == digests.digest(root / "pkg/a.py")[0]
    assert len(list(memo_path.iterdir())) == 1  # the root's directory had only c.py: its file is gone
    # and another root's memo is another file (frames carry the module's path)
    assert discovery_memo.path_for(tmp_path / "state", tmp_path / "elsewhere") != memo_path


def _corrupt(memo_path: Path, how: str) -> None:
    for shard in sorted(memo_path.iterdir()):  # each source directory's file
        data = shard.read_bytes()
        if how == "flipped byte":
            shard.write_bytes(data[:-40] + bytes([data[-40] ^ 1]) + data[-39:])
        elif how == "torn":
            shard.write_bytes(data[: len(data) // 2])
        elif how == "another format":
            shard.write_bytes(data.replace(b"memo 2\n", b"memo 9\n", 1))
        elif how == "garbage with a valid checksum":
            import hashlib

            body = b"\xff" * 64
            shard.write_bytes(discovery_memo.MAGIC + hashlib.sha256(body).digest() + body)
        elif how == "a directory":
            shard.unlink()
            shard.mkdir()
        elif how == "a FIFO":
            shard.unlink()
            os.mkfifo(shard)


@pytest.mark.parametrize("how", ["flipped byte", "torn", "another format", "garbage with a valid checksum",
                                 "a directory", "a FIFO"])
def test_a_memo_that_is_not_what_we_wrote_is_ignored_whole(tmp_path, compiled, how):
    root = _tree(tmp_path / "root", FILES)
    digests = FileDigests(tmp_path / "state", str(root))
    memo_path = discovery_memo.path_for(tmp_path / "state", root)
    _hand(root, tmp_path, digests, memo_path)
    _corrupt(memo_path, how)
    del compiled[:]
    digests = FileDigests(tmp_path / "state", str(root))
    stream, memo = _hand(root, tmp_path, digests, memo_path)
    assert memo.hits == 0 and len(compiled) == len(FILES)  # nothing taken from it: all compiled again
    for rel in FILES:
        path = os.path.join(os.path.realpath(root), rel)
        assert _taken(root, stream, rel)[0] == compile(Path(path).read_bytes(), path, "exec", dont_inherit=True)
    if how not in ("a directory", "a FIFO"):  # written afresh, whole
        assert sorted(discovery_memo.stored(memo_path)) == sorted(FILES)


def test_the_import_records_kept_with_the_stat_cache_are_those_of_current_contents(tmp_path):
    # each edit records the imports of the file's new bytes; the old bytes' records go
    module = _tree(tmp_path / "root", {"m.py": "import os\n"}) / "m.py"
    digests = FileDigests(tmp_path / "state", "scope")
    first = digests.digest(module)[0]
    digests.remember_parsed(first, [[0, "os", []]])
    digests.save()
    module.write_text("import sys\n")
    digests = FileDigests(tmp_path / "state", "scope")
    assert digests.parsed(first) == [[0, "os", []]]
    second = digests.digest(module)[0]
    digests.remember_parsed(second, [[0, "sys", []]])
    digests.save()
    kept = FileDigests(tmp_path / "state", "scope")
    assert kept.parsed(first) is None and kept.parsed(second) == [[0, "sys", []]]


class _Repo:
    """Discoveries of one generated repository: with a kept cache (its memo) and with an empty one."""

    def __init__(self, root: Path, tmp: Path):
        self.root, self.tmp, self.n = root, tmp, 0

    def discover(self, cache: Path):
        cfg = config_mod.load(self.root)
        store = LocalStore(cache)
        digests = FileDigests(store.root / "state", str(cfg.root))
        try:
            return discover(cfg, Selection(), store, digests)
        finally:
            digests.save()

    def memo(self) -> dict:
        cfg = config_mod.load(self.root)
        return discovery_memo.stored(discovery_memo.path_for(self.tmp / "kept" / "state", cfg.root))

    def same_as_fresh(self, how: str, compiled: list[str]) -> set[str]:
        """The files the parent compiled for the kept cache's discovery."""
        del compiled[:]
        kept = self.discover(self.tmp / "kept")
        by_kept = {os.path.relpath(f, os.path.realpath(self.root)) for f in compiled}
        self.n += 1
        fresh = self.discover(self.tmp / f"fresh-{self.n}")
        assert kept.how == how and fresh.how == "full"
        assert kept.to_json() == fresh.to_json()
        entries = [json.loads(next((self.tmp / c / "discovery").glob("*.json")).read_text())
                   for c in ("kept", f"fresh-{self.n}")]
        assert entries[0]["code"] == entries[1]["code"]  # the prints the early cutoff compares
        return by_kept


def test_discoveries_with_the_memo_equal_an_empty_caches(tmp_path, compiled):
    root = tmp_path / "gen"
    generate(root, Shape(envs=4, files=120))
    repo = _Repo(root, tmp_path)
    assert repo.discover(tmp_path / "kept").how == "full"
    memoised = set(repo.memo())
    assert memoised

    # a file added: a full discovery, which compiles what it added and nothing memoised
    shutil.copy(root / "services/svc_001/mod_000.py", root / "services/svc_001/mod_new.py")
    assert not repo.same_as_fresh("full", compiled) & memoised
    assert "services/svc_001/mod_new.py" in repo.memo()

    # a library edit: an incremental discovery, handed the memo's code for what it imports again
    lib = root / "libs/lib_000/m_000.py"
    lib.write_text(lib.read_text().replace("return ", "return 1 + ", 1))
    assert repo.same_as_fresh("incremental", compiled) <= {"libs/lib_000/m_000.py"}
    assert repo.memo()["libs/lib_000/m_000.py"][0] == FileDigests(None, "t").digest(lib)[0]

    # a module removed: full again, and the memo forgets it
    (root / "services/svc_001/mod_new.py").unlink()
    assert not repo.same_as_fresh("full", compiled)
    assert "services/svc_001/mod_new.py" not in repo.memo()


def test_a_tree_inside_the_cache_keeps_no_memo(tmp_path):
    # `affected` exports a revision under the cache's tmp/ and removes it after the run:
    # a memo kept for it would be megabytes nothing ever reads again
    cache = tmp_path / "cache"
    root = cache / "tmp" / "rev-0123-x" / "gen"
    generate(root, Shape(envs=2, files=40))
    assert _Repo(root, tmp_path).discover(cache).how == "full"
    assert not list((cache / "state").glob("code-*"))
    elsewhere = tmp_path / "gen"
    shutil.copytree(root, elsewhere)
    assert _Repo(elsewhere, tmp_path).discover(cache).how == "full"
    assert discovery_memo.stored(discovery_memo.path_for(cache / "state", elsewhere))
