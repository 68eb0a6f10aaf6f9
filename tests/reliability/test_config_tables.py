"""One schema checks every table of `[tool.hatch.build.targets.flyte]`: a
misspelt key in any of them (core, per-env, object-store and its clients, and
the tables the built-in rule set declares: docker, pex, deploy) exits 2 with one
message naming the pyproject.toml, the full TOML key and the valid keys,
before anything is stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.repos import Cli, cache_files, env_module, make_repo

pytestmark = pytest.mark.reliability("bad input")

T = "tool.hatch.build.targets.flyte"
GOOD = {"pkg/__init__.py": "", "pkg/a.py": env_module("a", var="env_a")}

CASES = {
    "top": ("bogus-key = 1", f"{T}.bogus-key", "allow-secrets, cache, cache-read-only"),
    "envs": (f"[{T}.envs.a]\nflavour = 1", f"{T}.envs.a.flavour", "copy-style, include"),
    "object-store": (f"[{T}.object-store]\nhdfs = {{}}", f"{T}.object-store.hdfs", "azure, gcs, reapi, s3, timeout"),
    "s3": (f"[{T}.object-store.s3]\nendpoint = 'x'", f"{T}.object-store.s3.endpoint", "access-key-id, anon, endpoint-url"),
    "gcs": (f"[{T}.object-store.gcs]\nprojet = 'x'", f"{T}.object-store.gcs.projet", "anon, endpoint-url, project, token"),
    "azure": (f"[{T}.object-store.azure]\naccount = 'x'", f"{T}.object-store.azure.account", "account-key, account-name"),
    "reapi": (f"[{T}.object-store.reapi]\ntoken = 'x'", f"{T}.object-store.reapi.token", "ca-file, header, token-env, token-file"),
    "docker": (f"[{T}.docker]\nnetwrk = 'host'", f"{T}.docker.netwrk", "base-images, base-map, build-args, builder"),
    "docker.base-images": (f"[{T}.docker.base-images]\nalpine = 'x'", f"{T}.docker.base-images.alpine",
                           "debian (use base-map for any other base)"),
    "pex": (f"[{T}.pex]\nlok = 'x'", f"{T}.pex.lok", "extra-args, lock, python"),
    "deploy": (f"[{T}.deploy]\nendpont = 'dns:///x'", f"{T}.deploy.endpont", "auth-type, ca-cert, endpoint, insecure, org, timeout"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("table", sorted(CASES))
def test_unknown_key_in_any_table_names_file_key_and_valid_keys(tmp_path: Path, table: str):
    extra, key, valid = CASES[table]
    root = make_repo(tmp_path / "repo", GOOD, pyproject_extra=extra)
    cli = Cli(root, tmp_path / "cache")
    # every command that reads the table, not only a build of the kind that owns it
    for args in (("build", "--json"), ("targets",)):
        res = cli.run(*args)
        res.assert_clean_error(2, f"Unknown field {key} in {root / 'pyproject.toml'}; valid fields: {valid}")
    assert cache_files(cli.cache_dir) == [], "a run with a bad config stored something"


@pytest.mark.timeout(120)
def test_a_rule_set_declares_its_own_table(tmp_path: Path):
    """A repository's rule set checks its table as the built-in kinds do; with
    it declared, the table's keys are valid and a misspelt one is not."""
    rules = {
        "myrules/register.py": (
            "from flyte_build.rule_api import ConfigTable, checks\n\n"
            "def rules():\n    return []\n\n"
            "def config_tables():\n    return {'lint': ConfigTable(keys={'strict': checks.boolean})}\n"
        ),
    }
    good = make_repo(tmp_path / "good", {**GOOD, **rules}, pyproject_extra=f'rules = ["myrules"]\n[{T}.lint]\nstrict = true')
    res = Cli(good, tmp_path / "cache").run("targets")
    assert res.rc == 0, res.describe()
    bad = make_repo(tmp_path / "bad", {**GOOD, **rules}, pyproject_extra=f'rules = ["myrules"]\n[{T}.lint]\nstrikt = true')
    Cli(bad, tmp_path / "cache").run("targets").assert_clean_error(2, f"Unknown field {T}.lint.strikt", "valid fields: strict")


BAD_VALUES = {
    "deploy.timeout": (f"[{T}.deploy]\ntimeout = -1", f"Field {T}.deploy.timeout must be a positive, finite number of seconds"),
    "docker.builder": (f"[{T}.docker]\nbuilder = 'podman'", f"Field {T}.docker.builder must be one of: auto, buildkit, classic"),
    "pex.extra-args": (f"[{T}.pex]\nextra-args = '--x'", f"Field {T}.pex.extra-args must be an array of strings"),
    "object-store.s3.anon": (f"[{T}.object-store.s3]\nanon = 'yes'", f"Field {T}.object-store.s3.anon must be a boolean"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("field", sorted(BAD_VALUES))
def test_a_bad_value_in_a_kind_table_is_an_error_before_anything_runs(tmp_path: Path, field: str):
    extra, message = BAD_VALUES[field]
    cli = Cli(make_repo(tmp_path / "repo", GOOD, pyproject_extra=extra), tmp_path / "cache")
    cli.run("targets").assert_clean_error(2, message)
    assert cache_files(cli.cache_dir) == []
