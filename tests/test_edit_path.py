"""What a one-file edit costs without the resident process: an edit that leaves
the compiled code as it was (a comment) is answered by discovery's early cutoff,
and the process imports neither flyte nor a signing library nobody asked for."""

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
    assert not {m for m in imported if m.split(".")[0] in ("flyte", "cryptography")}
    built = [t for t in run.json()["targets"] if t["status"] == "built"]
    assert built and all(t["kind"] == "bundle" for t in built)  # the bundles holding the file, rebuilt
