"""What a one-file edit costs without the resident process: an edit that leaves
the compiled code as it was (a comment) is answered by discovery's early cutoff,
and the process imports neither flyte nor a signing library nor a REAPI client nobody asked for."""

from __future__ import annotations

import pytest

from tests.support.cli import copy_sample, flyte_build

pytestmark = pytest.mark.timeout(300)


def test_a_comment_edit_imports_neither_flyte_nor_cryptography(tmp_path):
    repo = copy_sample(tmp_path / "repo")
    cache = tmp_path / "cache"
    assert flyte_build("--no-daemon", "build", "--json", cwd=repo, cache=cache).rc == 0
    edited = repo / "libs" / "common" / "text.py"
    edited.write_text(edited.read_text() + "\n# a comment\n")
    run = flyte_build("--no-daemon", "build", "--json", cwd=repo, cache=cache, python_flags=("-X", "importtime"))
    imported = {line.split("|")[-1].strip() for line in run.err.splitlines() if line.startswith("import time:")}
    assert run.rc == 0 and "flyte_build.workspace" in imported, run.describe()
    assert run.json()["discovery"]["how"] == "cutoff"
    assert not {m for m in imported if m.split(".")[0] in ("flyte", "cryptography", "grpc", "uuid")}
    assert "flyte_build.stores.reapi_client" not in imported  # no grpc:// cache configured
    built = [t for t in run.json()["targets"] if t["status"] == "built"]
    assert built and all(t["kind"] == "bundle" for t in built)  # the bundles holding the file, rebuilt


def test_the_childs_realpath_by_directory_is_os_path_realpath(tmp_path):
    # discovery's child resolves each loaded module's file by its directory's real path
    # (one realpath per directory): through symlinked directories, symlinked files and '..'
    import os
    import sys

    from flyte_build.discovery import child_envs

    (tmp_path / "a/b/c").mkdir(parents=True)
    (tmp_path / "x").mkdir()
    (tmp_path / "a/b/c/m.py").write_text("")
    (tmp_path / "x/n.py").write_text("")
    os.symlink(tmp_path / "a/b", tmp_path / "x/lb")
    os.symlink("../x/n.py", tmp_path / "a/ln.py")
    os.symlink(tmp_path / "a", tmp_path / "la")
    paths = [str(tmp_path / p) for p in ("a/b/c/m.py", "x/lb/c/m.py", "a/ln.py", "la/b/c/m.py", "la/ln.py",
                                         "la/../x/n.py", "x/lb/../n.py", "missing/q.py", "la/b/../ln.py")]
    paths += [m.__file__ for m in list(sys.modules.values()) if isinstance(getattr(m, "__file__", None), str)]
    assert [child_envs._realpath(p) for p in paths] == [os.path.realpath(p) for p in paths]
