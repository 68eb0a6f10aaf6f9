"""`[tool.flyte-build]` beside `[tool.hatch.build.targets.flyte]`: both tables
are read by the CLI and by hatch's builder, merged key by key; a key set in
both must agree; another `[tool.flyte-*]` table or an unknown key is exit 2
naming it. `flyte-build config` shows every effective setting and its source."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from flyte_build.hatch_plugin.config import flyte_settings
from tests.support.cli import flyte_build
from tests.support.repos import env_module

pytestmark = pytest.mark.timeout(300)

FILES = {
    "app/__init__.py": "",
    "app/tasks.py": env_module("app", imports="from app import helpers"),
    "app/helpers.py": "X = 1\n",
    "app/notes.txt": "not a module\n",
}


def project(root: Path, tables: str) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "p"\nversion = "0.1.0"\n\n{tables}')
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def run(root: Path, tmp_path: Path, *args: str, env: dict | None = None):
    return flyte_build(*args, cwd=root, cache=tmp_path / "cache", env={"CI": None, **(env or {})}, in_process=True)


def bundle_names(root: Path, tmp_path: Path) -> list[str]:
    r = run(root, tmp_path, "build", "--json")
    assert r.rc == 0, r.err
    with tarfile.open(r.json()["targets"][0]["path"]) as tar:
        return sorted(tar.getnames())


def test_the_cli_table_is_read_by_the_cli_and_by_hatch(tmp_path):
    root = project(tmp_path / "p", '[tool.flyte-build]\ncopy-style = "all"\n\n[tool.hatch.build.targets.flyte]\njobs = 2\n')
    assert "app/notes.txt" in bundle_names(root, tmp_path)  # copy-style "all" took effect
    # hatch hands its builder its own table; [tool.flyte-build] merges in
    cfg = flyte_settings(str(root), {"jobs": 2})
    assert (cfg.copy_style, cfg.jobs) == ("all", 2)
    plain = project(tmp_path / "q", "")
    assert "app/notes.txt" not in bundle_names(plain, tmp_path)


def test_a_key_in_both_tables_must_agree(tmp_path):
    same = project(tmp_path / "same", '[tool.flyte-build]\ncopy-style = "all"\n\n[tool.hatch.build.targets.flyte]\ncopy-style = "all"\n')
    assert "app/notes.txt" in bundle_names(same, tmp_path)
    root = project(tmp_path / "p", '[tool.flyte-build]\ncopy-style = "all"\n\n[tool.hatch.build.targets.flyte]\ncopy-style = "none"\n')
    r = run(root, tmp_path, "build")
    r.assert_clean_error(2, "tool.flyte-build.copy-style = 'all'", "tool.hatch.build.targets.flyte.copy-style = 'none'", "disagree")
    with pytest.raises(Exception, match="disagree"):
        flyte_settings(str(root), {"copy-style": "none"})


@pytest.mark.parametrize("tables, pieces", [
    ('[tool.flyte_build]\ncopy-style = "all"\n', ("Unknown table [tool.flyte_build]", "[tool.flyte-build], [tool.hatch.build.targets.flyte]")),
    ('[tool.flyte-builds]\n', ("Unknown table [tool.flyte-builds]",)),
    ('[tool.flyte-build]\ncopystyle = "all"\n', ("Unknown field tool.flyte-build.copystyle", "copy-style", "storage")),
    ('[tool.flyte-build]\ndependencies = ["x"]\n', ("Unknown field tool.flyte-build.dependencies",)),
    ('[tool.flyte-build]\ncopy-style = "most"\n', ("Field tool.flyte-build.copy-style must be one of: loaded_modules, all, none",)),
    ('[tool.flyte-build.docker]\nnetwrk = "host"\n', ("tool.flyte-build.docker.netwrk",)),
])
def test_bad_tables_and_keys_are_named(tmp_path, tables, pieces):
    root = project(tmp_path / "p", tables)
    for args in (("build",), ("config",)):
        run(root, tmp_path, *args).assert_clean_error(2, *pieces)
    assert not (tmp_path / "cache" / "cas").exists() or not any((tmp_path / "cache" / "cas").rglob("*.tar.gz"))


def test_config_shows_every_setting_and_its_source(tmp_path):
    root = project(tmp_path / "p", '[tool.flyte-build]\ncopy-style = "all"\nstorage = "file:///tmp/x"\n\n'
                                   '[tool.flyte-build.envs.app]\ninclude = ["app/*.txt"]\n\n'
                                   '[tool.hatch.build.targets.flyte]\njobs = 3\n')
    r = run(root, tmp_path, "--cache", str(tmp_path / "shared"), "--strict", "config", "--json")
    assert r.rc == 0, r.err
    got = r.json()["flyte_build"]
    pyproject = root / "pyproject.toml"
    assert got["copy-style"] == {"value": "all", "source": f"{pyproject}: tool.flyte-build.copy-style"}
    assert got["jobs"] == {"value": 3, "source": f"{pyproject}: tool.hatch.build.targets.flyte.jobs"}
    assert got["envs.app.include"] == {"value": ["app/*.txt"], "source": f"{pyproject}: tool.flyte-build.envs"}
    assert got["strict"] == {"value": True, "source": "flag --strict"}
    assert got["cache"]["source"] == "flag --cache"
    assert got["cache-dir"] == {"value": str(tmp_path / "cache"), "source": "env $FLYTE_BUILD_CACHE_DIR"}
    assert got["discovery-timeout"] == {"value": 300.0, "source": "default"}
    assert got["root"] == {"value": str(root), "source": "the directory holding pyproject.toml"}
    assert got["cache-writes"]["value"] == "read only" and "--cache-write" in got["cache-writes"]["source"]
    ci = run(root, tmp_path, "--cache", str(tmp_path / "shared"), "config", "--json", env={"CI": "true"}).json()["flyte_build"]
    assert ci["cache-writes"] == {"value": "publish", "source": "env $CI"}
    text = run(root, tmp_path, "config")
    assert text.rc == 0 and "flyte-build settings" in text.out and "tool.flyte-build.copy-style" in text.out
