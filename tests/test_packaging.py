"""Ready to publish: declared imports, `python -m build` + `twine check`, a git URL install.

BUILD.md's CI recipe installs flyte-build from a git URL of this repository
(the package is not on PyPI); the last test does exactly that from a local
clone, into a fresh venv, and runs the command it installs.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support import venvs
from tests.support.requirements import require

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = venvs.REPO


def declared() -> set[str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name.lower().replace("_", "-") for r in meta["dependencies"]}


def imported_top_levels() -> dict[str, str]:
    """Top-level module -> a file importing it, for everything flyte_build and rules import."""
    out: dict[str, str] = {}
    for base in ("flyte_build", "rules"):
        for path in sorted((REPO / base).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for n in names:
                    out.setdefault(n.split(".")[0], str(path.relative_to(REPO)))
    return out


def test_every_third_party_import_is_declared():
    dists = packages_distributions()
    mine = {"flyte_build", "rules", "hatch_build"}
    missing = {}
    for top, where in sorted(imported_top_levels().items()):
        if top in sys.stdlib_module_names or top in mine or top == "__future__":
            continue
        # not installed here (tomli, below Python 3.11): its distribution has its name
        names = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
        if not names & declared():
            missing[top] = (sorted(names), where)
    assert not missing, f"imported but not declared in pyproject.toml [project] dependencies: {missing}"


@pytest.mark.slow
def test_python_m_build_makes_an_sdist_and_a_wheel_that_pass_twine_check(tmp_path):
    require(venvs.uv() is not None, "uv (the test extra) makes python -m build's isolated environment in seconds")
    out = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "build", "--installer", "uv", "--outdir", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (sdist,) = out.glob("flyte_build-*.tar.gz")
    (wheel,) = out.glob("flyte_build-*-py3-none-any.whl")
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and check.stdout.count("PASSED") == 2, check.stdout + check.stderr

    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(z.read(name).decode())
    classifiers = meta.get_all("Classifier")
    assert "Topic :: Software Development :: Build Tools" in classifiers and "Framework :: Hatch" in classifiers
    assert meta["Keywords"] and "flyte" in meta["Keywords"].split(",")
    assert meta.get_all("Project-URL") and meta["Description-Content-Type"] == "text/markdown"
    assert "# flyte-build" in meta.get_payload()  # the README is the project page
    requires = {Requirement(r).name for r in meta.get_all("Requires-Dist") if "extra ==" not in r}
    assert {"httpx", "pathspec", "packaging", "flyteidl2", "connectrpc", "protobuf", "flyte"} <= requires
    with tarfile.open(sdist) as t:
        names = t.getnames()
    assert any(n.endswith("/pyproject.toml") for n in names) and any(n.endswith("/rules/register.py") for n in names)


@pytest.mark.slow
def test_install_from_a_git_url_as_the_ci_recipe_does(tmp_path):
    require(shutil.which("git") is not None, "git is needed to make a clone to install from")
    clone = tmp_path / "flyte-build"
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc", "dist", ".venv",
                                                                "*.egg-info", "build"))

    def git(*args):
        return subprocess.run(["git", "-C", str(clone), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "snapshot")
    rev = git("rev-parse", "HEAD").strip()
    venv = venvs.create(tmp_path / "venv")
    venvs.install(venv, f"flyte-build @ git+file://{clone}@{rev}")
    proc = venv.run("flyte-build", "--version")
    assert proc.returncode == 0 and proc.stdout.strip().startswith("flyte-build "), proc.stderr
    where = venv.run("python", "-c", "import flyte_build._builtin_rules as r; print(r.__file__)", cwd=tmp_path)
    assert where.returncode == 0 and str(venv.path) in where.stdout, where.stderr
