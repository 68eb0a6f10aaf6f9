"""Discovery relists only the directories whose mtime changed (flyte_build/discovery/relisting.py)
instead of walking the tree: whenever it answers, its answer is the walk's, and it answers
for what an editor's save by rename does (the same names, a new mtime)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from bench.generate import Shape, generate
from flyte_build.config import settings as config_mod
from flyte_build.discovery import discover as discovery
from flyte_build.discovery.relisting import relisted
from tests.support.cli import age_tree, build_json
from tests.support.gitrepo import GIT_ENV

pytestmark = pytest.mark.timeout(300)

MODULE = "services/svc_001/mod_000.py"


def _save_by_rename(root: Path) -> None:
    path = root / MODULE
    (root / "tmp-save").write_text(path.read_text() + "\n# saved\n")
    os.replace(root / "tmp-save", path)


# what happened -> whether relisting must answer (it may never answer wrong)
MUTATIONS = {
    "a module saved by rename": (_save_by_rename, True),
    "a directory touched": (lambda r: os.utime(r / "services/svc_001"), True),
    "__pycache__ written": (lambda r: (r / "services/svc_001/__pycache__").mkdir(), True),
    "a data file added": (lambda r: (r / "services/svc_001/new.json").write_text("{}"), True),
    "an __init__.py removed": (lambda r: (r / "services/svc_001/__init__.py").unlink(), True),
    "a module added": (lambda r: (r / "services/svc_001/added.py").write_text("X = 1\n"), False),
    "a module removed": (lambda r: (r / MODULE).unlink(), False),
    "a module renamed": (lambda r: os.replace(r / MODULE, r / "services/svc_001/renamed.py"), False),
    "a git-ignored module added": (lambda r: (r / "services/svc_001/ignored_x.py").write_text("X = 1\n"), False),
    "a subdirectory added": (lambda r: (r / "services/svc_001/sub").mkdir(), False),
    "a symlink to a module added": (lambda r: os.symlink(r / MODULE, r / "services/svc_001/link.py"), False),
    "a .flyteignore added": (lambda r: (r / "services/svc_001/.flyteignore").write_text("mod_001.py\n"), False),
    "a module replaced by a directory": (lambda r: ((r / MODULE).unlink(), (r / MODULE).mkdir()), False),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("relisting") / "repo"
    generate(root, Shape(envs=4, files=60))
    (root / ".gitignore").write_text("ignored_*.py\n")
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)
    return root


def _walked(root: Path):
    return discovery._walk(config_mod.load(root), "recursive", ["."])


@pytest.mark.parametrize("what", sorted(MUTATIONS))
def test_relisting_answers_as_the_walk_or_not_at_all(template, tmp_path, what):
    root = tmp_path / "repo"
    subprocess.run(["cp", "-a", str(template), str(root)], check=True)
    age_tree(root)
    before = _walked(root)
    assert MODULE in before.candidates and all(m is not None for m in before.dirs.values())
    mutate, must_answer = MUTATIONS[what]
    mutate(root)
    got = relisted(root, before.dirs, before.candidates, before.ignore_files, time.time_ns() - 2_000_000_000)
    after = _walked(root)
    if got is not None:
        assert after.candidates == before.candidates
        assert got == after.dirs  # the mtimes the walk would record (None where too recent)
    assert (got is not None) == must_answer


def test_a_save_by_rename_skips_the_walk_and_keeps_the_result(tmp_path, template, monkeypatch):
    root = tmp_path / "repo"
    subprocess.run(["cp", "-a", str(template), str(root)], check=True)
    cache = tmp_path / "cache"
    first = build_json(root, cache, "--no-daemon")
    age_tree(root)
    _save_by_rename(root)
    walks = []
    monkeypatch.setattr(discovery, "_walk", lambda *a: walks.append(a) or _walked(root))
    monkeypatch.chdir(root)
    again = build_json(root, cache, "--no-daemon", in_process=True)
    assert again["discovery"]["how"] == "cutoff" and not walks
    assert again["discovery"]["envs"] == first["discovery"]["envs"]
