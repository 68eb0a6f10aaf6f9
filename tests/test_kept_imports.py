"""Resolved imports are kept between runs per file, with the directories whose
listing decided them: a file created, removed or renamed in one directory
makes only the imports it could decide be resolved again. Whatever is kept,
each bundle must hold what a build with an empty cache puts in it."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.support.cli import flyte_build
from tests.support.repos import env_module, make_repo

# env `a` imports lazily (inside a function: discovery never runs it, the
# bundle must still hold it) a module of `pkg` that does not exist yet, and a
# shared library; env `b` lives elsewhere and imports the library only.
FILES = {
    "pkg/__init__.py": "",
    "pkg/a.py": env_module("a", imports="import lib.util", body="def later():\n    import pkg.extra\n    from pkg import other\n"),
    "lib/__init__.py": "",
    "lib/util.py": "X = 1\n",
    "svc/__init__.py": "",
    "svc/b.py": env_module("b", var="env_b", imports="from lib import util"),
}


def _bundles(root: Path, cache: Path) -> dict[str, tuple[str, list[str]]]:
    import tarfile

    doc = flyte_build("build", "--json", cwd=root, cache=cache, env={"PYTHONDONTWRITEBYTECODE": "1"}).assert_ok().json()
    out = {}
    for t in doc["targets"]:
        with tarfile.open(t["path"]) as tf:
            out[t["target"]] = (t["digest"], sorted(m.name for m in tf.getmembers() if m.isfile()))
    return out


def _same_as_fresh(root: Path, warm: Path, tmp: Path) -> dict:
    """The warm cache's bundles, checked equal to an empty cache's."""
    time.sleep(0.05)
    got = _bundles(root, warm)
    fresh = tmp / f"fresh-{time.time_ns()}"
    assert got == _bundles(root, fresh)
    shutil.rmtree(fresh, ignore_errors=True)
    return got


@pytest.mark.timeout(300)
def test_directory_changes_redo_only_what_they_decided_and_bundles_match_a_fresh_build(tmp_path: Path):
    root = make_repo(tmp_path / "repo", FILES)
    warm = tmp_path / "warm"
    first = _bundles(root, warm)
    assert "pkg/extra.py" not in first["bundle:a"][1]

    # a new module where a lazy import looked for it: a's bundle gains it, b's stays
    (root / "pkg" / "extra.py").write_text("Y = 2\n")
    grown = _same_as_fresh(root, warm, tmp_path)
    assert "pkg/extra.py" in grown["bundle:a"][1]
    assert grown["bundle:b"] == first["bundle:b"]

    # an editor's save (write a copy, rename it over the file): both bundles follow
    tmp_copy = root / "lib" / ".util.py.swp"
    tmp_copy.write_text("X = 3\n")
    os.replace(tmp_copy, root / "lib" / "util.py")
    saved = _bundles(root, warm)
    assert saved["bundle:b"][0] != grown["bundle:b"][0] and saved["bundle:a"][0] != grown["bundle:a"][0]

    # the module becomes a package (a directory of another name's): resolved again
    (root / "pkg" / "extra.py").unlink()
    (root / "pkg" / "other").mkdir()
    (root / "pkg" / "other" / "__init__.py").write_text("Z = 1\n")
    moved = _bundles(root, warm)
    assert "pkg/extra.py" not in moved["bundle:a"][1]
    assert "pkg/other/__init__.py" in moved["bundle:a"][1]

    # a module shadowing a library name in a directory only b's lookups consulted,
    # with the kept table damaged: its slots name no directory, so it is not trusted
    (root / "svc" / "lib.py").write_text("")
    for state in (warm / "state").glob("stat-*.json"):
        raw = json.loads(state.read_text())
        for entry in raw["extra"]["resolved_imports"]["files"].values():
            entry[2] = [10_000, -1, "x"]
        state.write_text(json.dumps(raw))
    _same_as_fresh(root, warm, tmp_path)
