"""A wheel install and an editable install of flyte-build both work, and agree.

Each lives in its own fresh venv (no system site-packages): the wheel built
from this tree, and `pip install -e <repo>` (through uv's pip interface when
uv is present; see tests/support/venvs.py for the timing that decided it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import venvs
from tests.support.cli import copy_sample


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def editable_venv(tmp_path_factory) -> venvs.Venv:
    venv = venvs.create(tmp_path_factory.mktemp("editable") / "venv")
    venvs.install(venv, editable=venvs.REPO)
    return venv


def build_json(venv: venvs.Venv, tmp: Path) -> dict:
    repo = tmp / "repo"
    copy_sample(repo)
    proc = venv.run("flyte-build", "build", "--json", cwd=repo, env={"FLYTE_BUILD_CACHE_DIR": str(tmp / "cache")})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def where(venv: venvs.Venv, code: str, cwd: Path):
    return venv.run("python", "-c", code, cwd=cwd)


def test_wheel_and_editable_installs_build_the_same_bundles(editable_venv, tmp_path):
    wheel_venv = venvs.wheel_venv()
    from_wheel = build_json(wheel_venv, tmp_path / "w")
    from_editable = build_json(editable_venv, tmp_path / "e")
    digests = {t["target"]: t["digest"] for t in from_wheel["targets"]}
    assert len(digests) == 6
    assert digests == {t["target"]: t["digest"] for t in from_editable["targets"]}
    assert all(not t["cached"] for t in from_wheel["targets"] + from_editable["targets"])

    # each venv runs its own install: site-packages for the wheel, the tree for -e
    code = "import flyte_build; print(flyte_build.__file__)"
    w = where(wheel_venv, code, tmp_path).stdout.strip()
    e = where(editable_venv, code, tmp_path).stdout.strip()
    assert w.startswith(str(wheel_venv.path)) and "site-packages" in w, w
    assert Path(e).resolve() == (venvs.REPO / "flyte_build" / "__init__.py").resolve(), e


def test_no_generic_top_level_name_and_builtin_rules_only_in_the_wheel(editable_venv, tmp_path):
    for venv in (venvs.wheel_venv(), editable_venv):
        proc = where(venv, "import rules", tmp_path)
        assert proc.returncode != 0 and "No module named 'rules'" in proc.stderr, (venv, proc.stderr)

    names = venvs.wheel_names(venvs.session_wheel())
    assert "flyte_build/_builtin_rules/register.py" in names
    assert not [n for n in names if n.startswith(("rules/", "tests/", "sample_monorepo/", "bench/"))]
    assert not (venvs.REPO / "flyte_build" / "_builtin_rules").exists()  # the editable tree has none
    find = "import importlib.util as u; print(u.find_spec('flyte_build._builtin_rules') is not None)"
    assert where(venvs.wheel_venv(), find, tmp_path).stdout.strip() == "True"
    assert where(editable_venv, find, tmp_path).stdout.strip() == "False"


RULE_FILES = """\
import hashlib, inspect, json
from flyte_build.engine import rulesets
d = rulesets.builtin_dir()
files = {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*.py"))}
loaded = {k: inspect.getfile(r.run)[len(str(d)) + 1:] for k, r in rulesets.builtin_rules().items()}
print(json.dumps({"files": files, "loaded": loaded}))
"""


@pytest.mark.timeout(900)
def test_wheel_and_editable_installs_load_the_same_rule_files(editable_venv, tmp_path):
    """The wheel's flyte_build/_builtin_rules and the editable tree's rules/ hold the
    same files, the same modules define each kind, and `targets --json` agrees."""
    import hashlib

    seen = {}
    for label, venv in (("wheel", venvs.wheel_venv()), ("editable", editable_venv)):
        proc = where(venv, RULE_FILES, tmp_path)
        assert proc.returncode == 0, proc.stderr
        repo = copy_sample(tmp_path / label / "repo")
        listed = venv.run("flyte-build", "targets", "--json", cwd=repo, env={"FLYTE_BUILD_CACHE_DIR": str(tmp_path / label / "cache")})
        assert listed.returncode == 0, listed.stderr
        seen[label] = {**json.loads(proc.stdout), "targets": json.loads(listed.stdout)["targets"]}
    tree = {p.relative_to(venvs.REPO / "rules").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((venvs.REPO / "rules").rglob("*.py"))}
    assert seen["wheel"]["files"] == seen["editable"]["files"] == tree
    assert seen["wheel"]["loaded"] == seen["editable"]["loaded"]
    assert seen["wheel"]["loaded"]["bundle"] == "bundle/rule.py"
    assert seen["wheel"]["targets"] == seen["editable"]["targets"]
    assert {t["kind"] for t in seen["wheel"]["targets"]} == set(seen["wheel"]["loaded"])
