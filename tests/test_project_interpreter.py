"""The project's interpreter (issue 23, parts 1 and 2), on the shape of a company repository.

The Flyte project lives in `ml/` of a larger git repository (beside `web/` and
`docs/`); its modules import `tinydep`, a pure-Python package that exists only
in the project's own `.venv`; flyte-build runs from another interpreter (the
suite's). Discovery and task serialization must import the modules with the
project's `.venv`, `--python` must override it, an interpreter without flyte
is a clear exit 2, and `hatch build -t flyte` in hatch's isolated build
environment must import them with the project's `.venv` too.

The repository and its `.venv` are made once for the module (uv installs
flyte from its cache, ~2 s, and tinydep is written into its site-packages);
the `.venv` has nothing of flyte-build's, so the children are shown to need
only the standard library and flyte there.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support import venvs
from tests.support.cli import flyte_build
from tests.support.requirements import require

TINYDEP = 'NAME = "tiny"\n\n\ndef greeting() -> str:\n    return "hello from tinydep"\n'
MODULE_A = """\
import flyte
import tinydep

env = flyte.TaskEnvironment(name="a_" + tinydep.NAME, env_vars={"GREETING": tinydep.greeting()})


@env.task
async def t(x: int) -> int:
    return x
"""
MODULE_B = """\
import flyte

env = flyte.TaskEnvironment(name="b")


@env.task
async def u(x: int) -> int:
    return x
"""
PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.24", "flyte-build"]
build-backend = "hatchling.build"

[project]
name = "ml"
version = "0.1.0"
dependencies = ["flyte"]

[tool.hatch.build.targets.flyte]
"""


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=root, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def company(tmp_path_factory):
    top = tmp_path_factory.mktemp("company") / "repo"
    files = {"web/index.html": "<html></html>\n", "docs/readme.md": "# docs\n", ".gitignore": ".venv/\ndist/\n",
             "ml/pyproject.toml": PYPROJECT, "ml/pkg/__init__.py": "", "ml/pkg/a.py": MODULE_A, "ml/pkg/b.py": MODULE_B}
    for rel, text in files.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(text)
    _git(top, "init", "-q")
    _git(top, "add", "-A")
    _git(top, "commit", "-q", "-m", "init")
    venv = top / "ml" / ".venv"
    # flyte (with its own dependencies) and nothing of flyte-build's: the children must
    # need only the standard library and flyte there
    require(venvs.uv() is not None, "uv makes the project's .venv (flyte installed from its cache, ~2 s)")
    venvs.install(venvs.create(venv), f"flyte=={importlib.metadata.version('flyte')}")
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "tinydep").mkdir(parents=True)
    (Path(site) / "tinydep" / "__init__.py").write_text(TINYDEP)
    bare = tmp_path_factory.mktemp("bare") / "venv"  # a Python without flyte
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    return {"top": top, "ml": top / "ml", "venv": venv, "bare": bare / "bin" / "python"}


def _specs(run_json: dict, target: str) -> str:
    rec = next(t for t in run_json["targets"] if t["target"] == target)
    return Path(rec["path"]).read_text()


def test_a_project_below_the_git_root_imports_with_its_own_venv(company, tmp_path):
    import importlib.util

    assert importlib.util.find_spec("tinydep") is None  # only the project's .venv has it
    cache = tmp_path / "cache"
    run = flyte_build("build", "--json", "bundle:*", "specs:*", cwd=company["ml"], cache=cache)
    run.assert_ok()
    doc = run.json()
    assert {t["target"] for t in doc["targets"]} == {"bundle:a_tiny", "bundle:b", "specs:a_tiny", "specs:b"}
    assert "hello from tinydep" in _specs(doc, "specs:a_tiny")  # serialized with tinydep imported
    # the .venv inside the root is the interpreter's, not a local sys.path entry to ship
    assert '{"key": "_F_SYS_PATH", "value": "./."}' in _specs(doc, "specs:b") and ".venv" not in _specs(doc, "specs:b")
    bundle = next(t for t in doc["targets"] if t["target"] == "bundle:a_tiny")
    with tarfile.open(bundle["path"]) as tar:
        names = tar.getnames()
    assert "pkg/a.py" in names and not any("tinydep" in n or ".venv" in n for n in names), names
    shown = flyte_build("config", "--json", cwd=company["ml"], cache=cache).assert_ok().json()["flyte_build"]["python"]
    assert shown == {"value": str(company["venv"] / "bin" / "python"), "source": f"the .venv in {company['ml']}",
                     "python": ".".join(map(str, sys.version_info[:3])), "flyte": shown["flyte"]} and shown["flyte"]
    # asked once, then known by the stat of the interpreter and its flyte
    memo = list((cache / "interpreters").glob("*.json"))
    assert len(memo) == 1
    stamp = memo[0].stat().st_mtime_ns
    flyte_build("build", "bundle:*", cwd=company["ml"], cache=cache).assert_ok()
    assert memo[0].stat().st_mtime_ns == stamp


def test_python_flag_and_virtual_env_choose_and_are_named(company, tmp_path):
    cache = tmp_path / "cache"
    # the interpreter running flyte-build has no tinydep: the error names it and the way out
    run = flyte_build("--python", sys.executable, "build", cwd=company["ml"], cache=cache)
    run.assert_clean_error(2, "ModuleNotFoundError", "tinydep", f"imported by {sys.executable}", "chosen by --python",
                           "--python / config `python`")
    # a Python without flyte: exit 2 naming it and the fix, from the flag and from $VIRTUAL_ENV
    bare = company["bare"]
    flyte_build("--python", str(bare), "build", cwd=company["ml"], cache=cache).assert_clean_error(
        2, str(bare), "has no flyte", "pip install flyte")
    flyte_build("build", cwd=company["ml"], cache=cache, env={"VIRTUAL_ENV": str(bare.parent.parent)}).assert_clean_error(
        2, str(bare), "$VIRTUAL_ENV", "has no flyte")
    flyte_build("--python", str(company["ml"] / "nope"), "build", cwd=company["ml"], cache=cache).assert_clean_error(
        2, "nope", "not an executable interpreter")
    # config `python`, relative to the project, over the .venv
    pyproject = company["ml"] / "pyproject.toml"
    pyproject.write_text(PYPROJECT + f'python = "{bare}"\n')
    try:
        flyte_build("build", cwd=company["ml"], cache=cache).assert_clean_error(2, str(bare), "config `python`")
    finally:
        pyproject.write_text(PYPROJECT)


@pytest.mark.timeout(600)
def test_hatch_build_in_its_isolated_environment_imports_with_the_projects_venv(company, tmp_path):
    require(venvs.uv() is not None, "uv is needed for hatch's build environments (hatch installs with uv)")
    venv = venvs.wheel_venv()
    (tmp_path / "hatch").mkdir()
    (tmp_path / "hatch" / "config.toml").write_text("")
    env = {"FLYTE_BUILD_CACHE_DIR": str(tmp_path / "cache"), "HATCH_DATA_DIR": str(tmp_path / "hatch" / "data"),
           "HATCH_CACHE_DIR": str(tmp_path / "hatch" / "cache"), "HATCH_CONFIG": str(tmp_path / "hatch" / "config.toml"),
           "UV_FIND_LINKS": str(venvs.session_wheel().parent)}
    proc = venv.run("hatch", "build", "-t", "flyte", cwd=company["ml"], env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    dist = company["ml"] / "dist" / "flyte"
    manifest = json.loads((dist / "manifest.json").read_text())
    assert sorted(t["target"] for t in manifest["targets"]) == ["bundle:a_tiny", "bundle:b"], manifest
    assert "built bundle:a_tiny" in out, out


def test_affected_imports_the_revision_with_the_projects_venv(company, tmp_path):
    """The exported revision has no `.venv` (it is ignored): its modules are
    imported by the working tree's interpreter, so tinydep is found there too.
    Only b's targets are affected: with the `.venv` inside the root, its
    site-packages had counted as a local sys.path entry and flyte's config
    reader as project code, so every env's specs changed params."""
    cache = tmp_path / "cache"
    b = company["ml"] / "pkg" / "b.py"
    b.write_text(MODULE_B.replace("return x", "return x + 1"))
    try:
        run = flyte_build("affected", "--since", "HEAD", "--json", cwd=company["ml"], cache=cache)
        run.assert_ok()
        targets = {t["target"] if isinstance(t, dict) else t for t in run.json()["targets"]}
        assert targets == {"bundle:b", "specs:b", "check:b", "deploy:b"}, run.out
    finally:
        b.write_text(MODULE_B)


@pytest.mark.timeout(600)
def test_hatch_build_without_a_venv_uses_hatchs_default_environment(company, tmp_path):
    """No `.venv`: `hatch build -t flyte` imports the modules with hatch's own
    `default` environment of the project (`hatch env create`), where the
    project's dependencies are."""
    import shutil

    require(venvs.uv() is not None, "uv is needed for hatch's environments (hatch installs with uv)")
    venv = venvs.wheel_venv()
    project = tmp_path / "ml"
    shutil.copytree(company["ml"], project, ignore=shutil.ignore_patterns(".venv", "dist"))
    (tmp_path / "hatch").mkdir()
    (tmp_path / "hatch" / "config.toml").write_text("")
    env = {"FLYTE_BUILD_CACHE_DIR": str(tmp_path / "cache"), "HATCH_DATA_DIR": str(tmp_path / "hatch" / "data"),
           "HATCH_CACHE_DIR": str(tmp_path / "hatch" / "cache"), "HATCH_CONFIG": str(tmp_path / "hatch" / "config.toml"),
           "UV_FIND_LINKS": str(venvs.session_wheel().parent)}
    # the environment gets the project's dependencies without an editable install of the
    # project (which would build flyte-build's dependencies from scratch with pip: ~100 s)
    (project / "pyproject.toml").write_text(PYPROJECT.replace("[tool.hatch.build.targets.flyte]", (
        "[tool.hatch.envs.default]\nskip-install = true\ninstaller = \"uv\"\n"
        f"dependencies = [\"flyte=={importlib.metadata.version('flyte')}\"]\n\n[tool.hatch.build.targets.flyte]")))
    created = venv.run("hatch", "env", "create", cwd=project, env=env)
    assert created.returncode == 0, (created.stdout + created.stderr)[-3000:]
    where = venv.run("hatch", "env", "find", "default", cwd=project, env=env).stdout.strip().splitlines()[-1]
    site = subprocess.run([str(Path(where) / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "tinydep").mkdir()
    (Path(site) / "tinydep" / "__init__.py").write_text(TINYDEP)
    proc = venv.run("hatch", "build", "-t", "flyte", cwd=project, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((project / "dist" / "flyte" / "manifest.json").read_text())
    assert sorted(t["target"] for t in manifest["targets"]) == ["bundle:a_tiny", "bundle:b"], manifest


def _venv_with_tinydep(venv: Path, version: str, name: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    _install(site, version, name)
    return site


def _install(site: Path, version: str, name: str) -> None:
    """What `pip install tinydep==VERSION` leaves: the module and a metadata directory named by the version."""
    for old in site.glob("tinydep-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    (site / "tinydep.py").write_text(f'NAME = "{name}"\n')
    meta = site / f"tinydep-{version}.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tinydep\nVersion: {version}\n")
    (meta / "top_level.txt").write_text("tinydep\n")


@pytest.mark.timeout(300)
def test_upgrading_a_package_in_the_projects_venv_discovers_again(tmp_path):
    """A module reads an installed package at import (here its NAME, into the
    task's environment variables). After `pip install -U` of that package in the
    project's .venv, a build must serialize what flyte would now import: no
    discovery result, no-op answer or specs from before the upgrade; and a
    machine with the old version does not take the new one's shared result."""
    import time

    from flyte_build.stores.signing import keygen
    from tests.support.repos import make_repo

    root = make_repo(tmp_path / "repo", {
        ".gitignore": ".venv/\n", "pkg/__init__.py": "",
        "pkg/a.py": 'import flyte\nimport tinydep\n\nenv = flyte.TaskEnvironment(name="a", env_vars={"N": tinydep.NAME})\n\n\n'
                    "@env.task\nasync def t(x: int) -> int:\n    return x\n"})
    site = _venv_with_tinydep(root / ".venv", "1.0", "alpha")
    private, public = keygen()
    shared = ["--cache", f"file://{tmp_path / 'shared'}"]
    a = {"FLYTE_BUILD_CACHE_SIGNING_KEY": private, "FLYTE_BUILD_CACHE_VERIFY_KEYS": public}
    cache = tmp_path / "cache"
    first = flyte_build("build", "--json", "specs:a", *shared, cwd=root, cache=cache, env=a).assert_ok().json()
    assert '"alpha"' in _specs(first, "specs:a")
    time.sleep(2.1)  # past the racy window (the venv and sources were just written), as a real project is
    bundles = [flyte_build("build", "--json", "bundle:a", cwd=root, cache=cache).assert_ok().json() for _ in range(2)]
    assert bundles[1]["discovery"]["how"] == "snapshot"  # the no-op answer is kept
    _install(site, "2.0", "beta")
    after = flyte_build("build", "--json", "bundle:a", cwd=root, cache=cache).assert_ok().json()
    assert after["discovery"]["how"] not in ("snapshot", "cached"), after["discovery"]
    run = flyte_build("build", "--json", "specs:a", *shared, cwd=root, cache=cache, env=a).assert_ok().json()
    assert '"beta"' in _specs(run, "specs:a") and '"alpha"' not in _specs(run, "specs:a")
    # a CI machine with the new version publishes its own result
    flyte_build("build", "--json", "specs:a", *shared, cwd=root, cache=tmp_path / "cache-ci", env=a).assert_ok()

    # other machines, the same tree: each takes the result discovered with its own version installed
    old = tmp_path / "old-venv"
    _venv_with_tinydep(old, "1.0", "alpha")
    b = flyte_build("build", "--json", "specs:a", *shared, "--python", str(old / "bin" / "python"), cwd=root,
                    cache=tmp_path / "cache-b", env={"FLYTE_BUILD_CACHE_VERIFY_KEYS": public}).assert_ok().json()
    assert b["discovery"]["how"] == "shared" and '"alpha"' in _specs(b, "specs:a")
    c = flyte_build("build", "--json", "specs:a", *shared, cwd=root, cache=tmp_path / "cache-c",
                    env={"FLYTE_BUILD_CACHE_VERIFY_KEYS": public}).assert_ok().json()
    assert c["discovery"]["how"] == "shared" and '"beta"' in _specs(c, "specs:a")


@pytest.mark.timeout(120)
def test_an_interpreter_asked_ahead_answers_as_one_asked_in_line(tmp_path):
    """A machine that has not asked the interpreter yet asks it in a thread while
    the run opens its caches (`interpreter.ask_ahead`): the answer is the one
    asked in line, it is kept for the next run, and a failure to answer is the
    same clear error, raised where the answer is needed."""
    from types import SimpleNamespace

    from flyte_build.config import interpreter
    from flyte_build.errors import UserError

    cfg = SimpleNamespace(python=sys.executable, pyproject=None, root=tmp_path)
    interpreter._memo.clear()
    assert interpreter.ask_ahead(cfg, tmp_path / "a") and interpreter.under_way(cfg)
    ahead = interpreter.of(cfg, tmp_path / "a")
    assert not interpreter.under_way(cfg)
    interpreter._memo.clear()
    assert interpreter.of(cfg, tmp_path / "b") == ahead  # asked in line, with another (empty) memo
    assert ahead.flyte == importlib.metadata.version("flyte") and ahead.python == tuple(sys.version_info[:3])
    interpreter._memo.clear()
    assert not interpreter.ask_ahead(cfg, tmp_path / "a")  # the memo answers: nothing to ask
    broken = SimpleNamespace(python="/bin/true", pyproject=None, root=tmp_path)  # runs, prints no answer
    assert interpreter.ask_ahead(broken, tmp_path / "c")
    with pytest.raises(UserError, match="does not run Python"):
        interpreter.of(broken, tmp_path / "c")
    interpreter._memo.clear()
