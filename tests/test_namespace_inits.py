"""An `__init__.py` added to (or removed from) a package directory the tasks import from.

`import nspkg.mod` with no `nspkg/__init__.py` loads a namespace package; once
one is added, every import of `nspkg.mod` runs it first, so the bundle must ship
it. Neither the walk's candidates (package `__init__.py` files are none) nor the
modules loaded last time name the new file: the discovery cache must still see
it (it records the `__init__.py` above every file read, present or not).
"""

from __future__ import annotations

import tarfile

import pytest

from tests.support.repos import Cli, env_module, make_repo

INIT = "nspkg/__init__.py"
FILES = {
    "pkg/__init__.py": "",
    "pkg/a.py": env_module("a", var="env_a", imports="import nspkg.mod"),
    "nspkg/mod.py": "X = 1\n",
}


def _built(cli: Cli) -> tuple[str, str, set[str]]:
    """(discovery's how, bundle:a's digest, the names in bundle:a)."""
    run = cli.build()
    run.assert_ok()
    doc = run.json()
    rec = next(t for t in doc["targets"] if t["target"] == "bundle:a")
    with tarfile.open(rec["path"], "r:gz") as tar:
        names = set(tar.getnames())
    return doc["discovery"]["how"], rec["digest"], names


@pytest.mark.timeout(300)
def test_an_init_added_to_a_namespace_package_ships_and_one_removed_stops(tmp_path):
    cli = Cli(make_repo(tmp_path / "repo", FILES), tmp_path / "cache")
    how, before, names = _built(cli)
    assert how == "full" and "nspkg/mod.py" in names and INIT not in names, (how, sorted(names))
    assert _built(cli)[0] in ("cached", "snapshot")  # a no-op (the whole-build snapshot once the tree is old enough)

    (cli.cwd / INIT).write_text("MARK = 'nspkg is a regular package now'\n")
    how, added, names = _built(cli)
    assert how not in ("cached", "snapshot"), "an added __init__.py left the cached discovery standing"
    assert INIT in names and "nspkg/mod.py" in names, sorted(names)
    assert added != before
    fresh = Cli(cli.cwd, tmp_path / "fresh-cache")
    assert _built(fresh)[1:] == (added, names)  # what a cold cache builds

    (cli.cwd / INIT).unlink()
    how, removed, names = _built(cli)
    assert how not in ("cached", "snapshot") and INIT not in names and "nspkg/mod.py" in names, (how, sorted(names))
    assert removed == before


@pytest.mark.timeout(300)
def test_a_shared_discovery_without_the_init_is_not_taken_where_it_exists(tmp_path):
    from flyte_build.stores.signing import keygen

    private, public = keygen()
    url = f"file://{tmp_path / 'shared'}"
    a = Cli(make_repo(tmp_path / "a" / "repo", FILES), tmp_path / "a" / "cache",
            env={"FLYTE_BUILD_CACHE_SIGNING_KEY": private})
    published = a.build("--cache", url)
    published.assert_ok()
    b_files = {**FILES, INIT: "MARK = 1\n"}  # the same candidate modules: the same content key
    b = Cli(make_repo(tmp_path / "b" / "repo", b_files), tmp_path / "b" / "cache",
            env={"FLYTE_BUILD_CACHE_VERIFY_KEYS": public})
    run = b.build("--cache", url)
    run.assert_ok()
    assert run.json()["discovery"]["how"] == "full"
    rec = next(t for t in run.json()["targets"] if t["target"] == "bundle:a")
    with tarfile.open(rec["path"], "r:gz") as tar:
        assert INIT in tar.getnames()
    # and the same tree as the publisher's is served from the store (the test can tell)
    c = Cli(make_repo(tmp_path / "c" / "repo", FILES), tmp_path / "c" / "cache",
            env={"FLYTE_BUILD_CACHE_VERIFY_KEYS": public})
    assert c.build("--cache", url).json()["discovery"]["how"] == "shared"
