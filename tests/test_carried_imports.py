"""A shared discovery entry carries its files' resolved imports, each with the
directory listings that decided it: a fresh machine reading the entry finds
the bundles' closures without resolving an import, and a machine whose
directories list otherwise resolves for itself (same bundles as its own build
with an empty cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from flyte_build.stores.signing import keygen
from tests.support.cli import build_json, copy_tree, digests
from tests.support.repos import env_module, make_repo

PRIVATE, PUBLIC = keygen()
SIGNER = {"FLYTE_BUILD_CACHE_SIGNING_KEY": PRIVATE}
READER = {"FLYTE_BUILD_CACHE_VERIFY_KEYS": PUBLIC}

# env `a` imports `util` inside a function (discovery never loads it: only the
# resolution finds it); `util` lives under the source root src/, unless a
# directory `util/` at the root decides the lookup first
FILES = {
    "pkg/__init__.py": "",
    "pkg/a.py": env_module("a", imports="import lib.helpers", body="def later():\n    import util\n"),
    "lib/__init__.py": "",
    "lib/helpers.py": "from lib import deep\n",
    "lib/deep.py": "X = 1\n",
    "src/util.py": "Y = 2\n",
}
EXTRA = '[tool.flyte-build]\nsource-roots = ["src"]\n'

# builds through the Python API; reports the bundles and how many module names the resolver looked up
PROBE = (
    "import json, sys, tarfile\n"
    "from flyte_build.workspace import Settings, Workspace\n"
    "ws = Workspace(Settings(cache=sys.argv[1] or None))\n"
    "res = ws.build()\n"
    "members = {r.target: sorted(m.name for m in tarfile.open(r.path).getmembers() if m.isfile()) for r in res}\n"
    "print(json.dumps({'how': ws.discovery.how, 'digests': {r.target: r.digest for r in res}, 'members': members,\n"
    "  'carried': len(ws.discovery.carried_imports.get('files', {})), 'lookups': len(ws.ctx.resolver._memo),\n"
    "  'warnings': ws.all_warnings()}))\n"
)


def _probe(checkout: Path, cache: Path, url: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, url], cwd=checkout, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "FLYTE_BUILD_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1", **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    base = tmp_path_factory.mktemp("carried")
    repo = make_repo(base / "a" / "repo", FILES, pyproject_extra=EXTRA)
    url = f"file://{base / 'shared'}"
    first = build_json(repo, base / "a" / "cache", "--cache", url, env=SIGNER)
    assert first["discovery"]["how"] == "full"
    return repo, url, first


def _members(doc: dict, target: str) -> list[str]:
    (t,) = [t for t in doc["targets"] if t["target"] == target]
    with tarfile.open(t["path"]) as tf:
        return sorted(m.name for m in tf.getmembers() if m.isfile())


@pytest.mark.timeout(300)
def test_a_fresh_machine_resolves_no_import(published, tmp_path):
    repo, url, first = published
    assert "src/util.py" in _members(first, "bundle:a")  # found by resolution alone
    b = copy_tree(repo, tmp_path / "elsewhere" / "checkout")
    got = _probe(b, tmp_path / "cache-b", url, READER)
    assert got["how"] == "shared"
    assert got["carried"] >= 4
    assert got["lookups"] == 0, "the reader resolved imports the entry carried"
    assert got["digests"] == digests(first)


@pytest.mark.timeout(300)
def test_a_directory_that_lists_otherwise_is_resolved_here(published, tmp_path):
    """Same sources (so the same discovery key), but the reader's root holds a
    directory `util/` (data only, no module): its lookup of `util` stops there.
    The carried resolution must not be used; the bundles are the ones this
    tree gives with an empty cache, not the writer's."""
    repo, url, first = published
    b = copy_tree(repo, tmp_path / "b")
    (b / "util").mkdir()
    (b / "util" / "README.md").write_text("data\n")
    own = _probe(copy_tree(b, tmp_path / "own"), tmp_path / "cache-own", "", {})
    assert "src/util.py" not in own["members"]["bundle:a"]
    assert own["digests"] != digests(first)  # the case this test is about: the resolutions differ
    got = _probe(b, tmp_path / "cache-b", url, READER)
    assert got["how"] == "shared"
    assert got["digests"] == own["digests"]
    assert got["members"] == own["members"]


@pytest.mark.timeout(300)
def test_names_no_import_can_look_up_do_not_void_the_resolutions(published, tmp_path):
    """A reader's checkout with more names than the writer's where no import looks
    (a log file at the root, a dot-directory, a directory whose name is no
    identifier) still uses every carried resolution and ships the same bundles."""
    repo, url, first = published
    b = copy_tree(repo, tmp_path / "b")
    (b / "build.log").write_text("ci output\n")
    (b / ".cache").mkdir()
    (b / "my-notes").mkdir()
    (b / "my-notes" / "notes.txt").write_text("todo\n")
    (b / "pkg" / "README.md").write_text("docs\n")
    got = _probe(b, tmp_path / "cache-b", url, READER)
    assert got["how"] == "shared"
    assert got["lookups"] == 0, "a name no import can look up voided the carried resolutions"
    assert got["digests"] == digests(first)
