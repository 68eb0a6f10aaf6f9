"""`hatch build -t flyte`, the real thing: hatch from PyPI, flyte-build from a
wheel freshly built from this tree, a temp copy of sample_monorepo.

hatch installs the build requirements into its own `hatch-build` environment;
flyte-build is not on PyPI, so uv (hatch's installer) finds it through
UV_FIND_LINKS pointing at the fresh wheel's directory, and HATCH_DATA_DIR is
a temp directory, so no environment of an earlier run (holding an older
plugin) can be reused.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from flyte_build.archives.tarsafe import extract_all
from tests.support import venvs
from tests.support.cli import copy_sample
from tests.support.requirements import require

FIELD_ERROR = "Field tool.hatch.build.targets.flyte.copy-style must be one of: loaded_modules, all, none"

pytestmark = pytest.mark.slow


class Project:
    """A temp copy of sample_monorepo with private hatch and flyte-build state."""

    def __init__(self, tmp: Path):
        require(venvs.uv() is not None, "uv is needed for hatch's build environments (hatch installs with uv)")
        self.venv = venvs.wheel_venv()
        self.wheel = venvs.session_wheel()
        self.root = tmp / "repo"
        copy_sample(self.root)
        self.env = {
            "FLYTE_BUILD_CACHE_DIR": str(tmp / "cache"),
            "HATCH_DATA_DIR": str(tmp / "hatch" / "data"),
            "HATCH_CACHE_DIR": str(tmp / "hatch" / "cache"),
            "HATCH_CONFIG": str(tmp / "hatch" / "config.toml"),
            "UV_FIND_LINKS": str(self.wheel.parent),
        }
        # an empty user config: the developer's own hatch settings stay out of it
        (tmp / "hatch").mkdir()
        (tmp / "hatch" / "config.toml").write_text("")
        self.dist = self.root / "dist"

    def run(self, *args: str):
        return self.venv.run(*args, cwd=self.root, env=self.env)

    def hatch(self, *args: str, ok: bool = True):
        proc = self.run("hatch", *args)
        out = proc.stdout + proc.stderr
        if ok:
            assert proc.returncode == 0, f"$ hatch {' '.join(args)} -> {proc.returncode}\n{out}"
        return proc.returncode, out

    def cli_digests(self) -> dict[str, str]:
        proc = self.run("flyte-build", "build", "--json")
        assert proc.returncode == 0, proc.stderr
        return {t["target"]: t["digest"] for t in json.loads(proc.stdout)["targets"]}

    def pyproject_append(self, text: str) -> None:
        p = self.root / "pyproject.toml"
        p.write_text(p.read_text() + "\n" + text)

    def pyproject_replace(self, old: str, new: str) -> None:
        p = self.root / "pyproject.toml"
        text = p.read_text()
        assert old in text
        p.write_text(text.replace(old, new))


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path)


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def assert_manifest_matches_files(manifest: dict, directory: Path) -> dict[str, str]:
    digests = {}
    for rec in manifest["targets"]:
        assert {"target", "kind", "env", "digest", "path"} <= set(rec), rec
        assert rec["target"] == f"{rec['kind']}:{rec['env']}"
        assert sha256_of(directory / rec["path"]) == rec["digest"], rec
        digests[rec["target"]] = rec["digest"]
    return digests


def test_hatch_build_flyte_matches_cli_then_hits_cache_then_cleans(project):
    rc, out = project.hatch("build", "-t", "flyte")
    out_dir = project.dist / "flyte"
    manifest_bytes = (out_dir / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)

    # the plugin hatch ran is the one just built from this tree, not a cached one
    (installed,) = Path(project.env["HATCH_DATA_DIR"]).rglob("site-packages/flyte_build/hatch_plugin/builder.py")
    assert installed.read_bytes() == (venvs.REPO / "flyte_build/hatch_plugin/builder.py").read_bytes()

    digests = assert_manifest_matches_files(manifest, out_dir)
    assert {r["kind"] for r in manifest["targets"]} == {"bundle"}
    assert len(digests) == 6, out
    assert digests == project.cli_digests()
    for rec in manifest["targets"]:
        with tarfile.open(out_dir / rec["path"]) as tf:  # real bundles
            assert any(n.endswith("tasks.py") or n.endswith(".py") for n in tf.getnames())
    assert "6 targets: 6 built, 0 cached" in out

    # unchanged tree: every target a cache hit, said so, and the same manifest bytes
    rc, out = project.hatch("build", "-t", "flyte")
    assert "6 targets: 0 built, 6 cached, 0 failed, 0 skipped (all cache hits)" in out, out
    assert out.count(" cached bundle:") == 6, out
    assert (out_dir / "manifest.json").read_bytes() == manifest_bytes

    project.hatch("clean", "-t", "flyte")
    left = [p for p in project.dist.rglob("*") if p.is_file()] if project.dist.exists() else []
    assert left == [] and not out_dir.exists()


def test_one_hatch_build_gives_wheel_sdist_and_matching_flyte_manifest(project):
    project.pyproject_append(
        '[tool.hatch.build.targets.wheel]\npackages = ["libs", "services"]\n\n'
        "[tool.hatch.build.hooks.flyte]\n"
    )
    rc, out = project.hatch("build")  # sdist and wheel, as CI would run it
    manifest_bytes = (project.dist / "flyte" / "manifest.json").read_bytes()
    digests = assert_manifest_matches_files(json.loads(manifest_bytes), project.dist / "flyte")
    assert digests == project.cli_digests()

    (wheel,) = project.dist.glob("sample_monorepo-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert z.read("sample_monorepo-0.3.0.dist-info/extra_metadata/flyte/manifest.json") == manifest_bytes
        assert "libs/common/stats.py" in z.namelist()
    (sdist,) = project.dist.glob("sample_monorepo-*.tar.gz")
    with tarfile.open(sdist) as tf:
        names = tf.getnames()
        assert tf.extractfile("sample_monorepo-0.3.0/flyte-manifest.json").read() == manifest_bytes
        extract_all(tf, project.root.parent / "unpacked")
    # the artifacts travel beside the sdist, not inside it
    assert not [n for n in names if "/dist/" in n], names

    # a wheel built from that sdist (as `pip install x.tar.gz` does) ships the
    # sdist's manifest instead of rebuilding on the installing machine
    unpacked = project.root.parent / "unpacked" / "sample_monorepo-0.3.0"
    proc = project.venv.run("python", "-m", "hatchling", "build", "-t", "wheel", cwd=unpacked, env=project.env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " built bundle:" not in proc.stdout + proc.stderr
    (wheel2,) = (unpacked / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel2) as z:
        assert z.read("sample_monorepo-0.3.0.dist-info/extra_metadata/flyte/manifest.json") == manifest_bytes


def test_bad_config_fails_naming_the_field_and_dependencies_install_way_works(project):
    # the other install way: not in [build-system] requires, but as the target's dependency
    project.pyproject_replace('requires = ["hatchling>=1.24", "flyte-build"]', 'requires = ["hatchling>=1.24"]')
    project.pyproject_replace('copy-style = "loaded_modules"', 'copy-style = "everything"\ndependencies = ["flyte-build"]')

    rc, out = project.hatch("build", "-t", "flyte", ok=False)
    assert rc != 0
    assert FIELD_ERROR in out, out
    assert "Traceback" not in out, out
    assert not list((project.dist / "flyte").glob("**/*.tar.gz"))

    # the CLI reads the same table through the same code: same message, exit 2
    cli = project.run("flyte-build", "build")
    assert cli.returncode == 2 and FIELD_ERROR in cli.stderr, cli.stderr

    project.pyproject_replace('copy-style = "everything"', 'copy-style = "loaded_modules"')
    rc, out = project.hatch("build", "-t", "flyte")
    manifest = json.loads((project.dist / "flyte" / "manifest.json").read_bytes())
    assert len(assert_manifest_matches_files(manifest, project.dist / "flyte")) == 6


def test_hook_and_version_errors_name_the_field(project):
    # hatchling itself, in the venv holding the fresh wheel: the same process
    # hatch starts inside its build environment, without creating one
    project.pyproject_append('[tool.hatch.build.targets.wheel]\npackages = ["libs"]\n\n[tool.hatch.build.targets.wheel.hooks.flyte]\ntarget = ["bundle:*"]\n')
    proc = project.venv.run("python", "-m", "hatchling", "build", "-t", "wheel", cwd=project.root, env=project.env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Unknown field tool.hatch.build.targets.wheel.hooks.flyte.target; valid fields: directory, targets" in out
    assert "Traceback" not in out and not list(project.dist.glob("*.whl"))

    proc = project.venv.run("python", "-m", "hatchling", "build", "-t", "flyte:nonsense", cwd=project.root, env=project.env)
    assert proc.returncode != 0 and "Unknown versions for target `flyte`: nonsense" in proc.stdout + proc.stderr

    # hatch's builder reads [tool.flyte-build] too: a bad value there, or one that
    # disagrees with hatch's own table, fails the flyte target naming the field
    def flyte_target_fails_with(expected: str) -> None:
        proc = project.venv.run("python", "-m", "hatchling", "build", "-t", "flyte", cwd=project.root, env=project.env)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and expected in out and "Traceback" not in out, out

    project.pyproject_append('[tool.flyte-build]\njobs = 0\n')
    flyte_target_fails_with("Field tool.flyte-build.jobs must be a positive integer")
    project.pyproject_replace("jobs = 0", 'copy-style = "all"')
    flyte_target_fails_with("tool.flyte-build.copy-style = 'all' and tool.hatch.build.targets.flyte.copy-style = 'loaded_modules' disagree")
