"""One configuration with flyte: the same config.yaml as the `flyte` CLI, read by flyte's loader.

Differential where it can be: the file flyte-build picks equals the file
flyte's own `resolve_config_path` picks, state by state of a tree with every
candidate location. Then what users see: `flyte-build config` (values, where
each came from, secrets masked), discovery under the configured domain
(`flyte.current_domain()`), and bad config files as input errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.cli import flyte_build

SECRET = "zz-Very-Secret-0099"

# each state adds one candidate location, from the lowest precedence to the highest
STATES = [
    ("home_flyte", "home/.flyte/config.yaml"),
    ("home_union", "home/.union/config.yaml"),
    ("flytectl_env", "elsewhere/flytectl.yaml"),
    ("uctl_env", "elsewhere/uctl.yaml"),
    ("git_root", "repo/.flyte/config.yaml"),
    ("cwd_dot_flyte", "repo/sub/dir/.flyte/config.yaml"),
    ("cwd_config", "repo/sub/dir/config.yaml"),
]

PROBE = r"""
import json, os, sys
from pathlib import Path
base, states = Path(sys.argv[1]), json.loads(sys.argv[2])
from flyte.config._reader import resolve_config_path
from flyte_build import flyte_config
os.chdir(base / "repo/sub/dir")
os.environ["HOME"] = str(base / "home")
out = []
for name, rel in states:
    p = base / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"task:\n  project: {name}\n")
    if name == "flytectl_env":
        os.environ["FLYTECTL_CONFIG"] = str(p)
    if name == "uctl_env":
        os.environ["UCTL_CONFIG"] = str(p)
    theirs = resolve_config_path()
    mine = flyte_config.locate()
    out.append([name, str(Path(theirs).resolve()) if theirs else None, mine.path and str(Path(mine.path).resolve()), mine.found_by])
print(json.dumps(out))
"""


def test_the_file_is_the_one_flyte_picks_in_flytes_order(tmp_path):
    (tmp_path / "repo" / "sub" / "dir").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("FLYTECTL_CONFIG", "UCTL_CONFIG")}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), json.dumps(STATES)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    for name, theirs, mine, _ in rows:
        assert mine == theirs, (name, theirs, mine)
    # each newly added location won: the order is flyte's, highest precedence last here
    assert [r[0] for r in rows] == [s[0] for s in STATES]
    assert [r[2] for r in rows] == [str((tmp_path / rel).resolve()) for _, rel in STATES]
    assert [r[3] for r in rows] == ["~/.flyte/config.yaml", "~/.union/config.yaml", "$FLYTECTL_CONFIG", "$UCTL_CONFIG",
                                    "<git root>/.flyte/config.yaml", "./.flyte/config.yaml", "./config.yaml"]


def test_discovery_env_names_are_flytes(tmp_path):
    from flyte.config import _internal

    from flyte_build import flyte_config

    names = set()
    for group in (_internal.Task, _internal.Image):
        for v in vars(group).values():
            if isinstance(v, _internal.ConfigEntry):
                names.update(v.yaml_entry.env_names())
    assert names == set(flyte_config.DISCOVERY_ENV)


def write_repo(root: Path, domain_in_table: str | None = None) -> Path:
    (root / "pkg").mkdir(parents=True)
    table = f'\n[tool.hatch.build.targets.flyte]\ndomain = "{domain_in_table}"\n' if domain_in_table else ""
    (root / "pyproject.toml").write_text(f'[project]\nname = "t"\nversion = "0"\n{table}')
    (root / "pkg" / "__init__.py").write_text("")
    # the environment's name depends on the domain flyte is initialised with
    (root / "pkg" / "envs.py").write_text(
        "import flyte\n\n"
        'env = flyte.TaskEnvironment(name=f"svc-{flyte.current_domain()}-{flyte.current_project()}", image="python:3.11")\n\n\n'
        "@env.task\nasync def one(x: int) -> int:\n    return x\n"
    )
    (root / ".flyte").mkdir()
    (root / ".flyte" / "config.yaml").write_text("task:\n  project: acme\n  domain: staging\n")
    return root


def env_names(run) -> list[str]:
    assert run.rc == 0, run.err
    return sorted({t["env"] for t in run.json()["targets"]})


def clean_env() -> dict:
    return {k: "" for k in os.environ if k.startswith(("FLYTE_TASK", "FLYTE_IMAGE", "FLYTE_API_KEY", "FLYTECTL", "UCTL"))}


def test_discovery_runs_with_the_configured_project_and_domain(tmp_path):
    root = write_repo(tmp_path / "repo")
    cache = tmp_path / "cache"
    env = {**clean_env(), "HOME": str(tmp_path / "home")}
    run = flyte_build("targets", "--json", cwd=root, cache=cache, env=env)
    assert env_names(run) == ["svc-staging-acme"]
    # an edit of the config file is seen (its digest keys the cached discovery)
    (root / ".flyte" / "config.yaml").write_text("task:\n  project: acme\n  domain: production\n")
    assert env_names(flyte_build("targets", "--json", cwd=root, cache=cache, env=env)) == ["svc-production-acme"]
    # flyte's FLYTE_* variables over the file, the pyproject table over both, the flag over all
    env2 = {**env, "FLYTE_TASK_DOMAIN": "qa"}
    assert env_names(flyte_build("targets", "--json", cwd=root, cache=cache, env=env2)) == ["svc-qa-acme"]
    assert env_names(flyte_build("--domain", "dev", "targets", "--json", cwd=root, cache=cache, env=env2)) == ["svc-dev-acme"]
    root2 = write_repo(tmp_path / "repo2", domain_in_table="from-table")
    assert env_names(flyte_build("targets", "--json", cwd=root2, cache=cache, env=env2)) == ["svc-from-table-acme"]
    # --config names another file; a missing one is bad input naming it
    other = tmp_path / "other.yaml"
    other.write_text("task:\n  project: other\n  domain: sandbox\n")
    assert env_names(flyte_build("--config", str(other), "targets", "--json", cwd=root, cache=cache, env=env)) == \
        ["svc-sandbox-other"]
    missing = flyte_build("--config", str(tmp_path / "nope.yaml"), "targets", cwd=root, cache=cache, env=env)
    assert missing.rc == 2 and "nope.yaml" in missing.err and "cannot read" in missing.err


def test_a_no_op_reads_the_config_without_importing_flyte(tmp_path):
    root = write_repo(tmp_path / "repo")
    cache = tmp_path / "cache"
    env = {**clean_env(), "HOME": str(tmp_path / "home")}
    assert flyte_build("build", "--json", cwd=root, cache=cache, env=env).rc == 0
    again = flyte_build("build", "--json", cwd=root, cache=cache, env=env, python_flags=("-X", "importtime"), timeout=120)
    imported = {line.split("|")[-1].strip() for line in again.err.splitlines() if line.startswith("import time:")}
    assert again.rc == 0 and "flyte_build" in imported, again.describe()
    assert not imported & {"flyte", "yaml"}, sorted(imported & {"flyte", "yaml"})
    assert all(t["cached"] for t in again.json()["targets"])


def test_config_command_shows_where_each_value_came_from_and_masks_secrets(tmp_path):
    root = tmp_path / "repo"
    (root / ".flyte").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "t"\nversion = "0"\n\n[tool.hatch.build.targets.flyte]\n'
                                         'project = "from-table"\n\n[tool.hatch.build.targets.flyte.deploy]\ninsecure = false\n')
    (tmp_path / "secret").write_text(SECRET)
    cfg = root / ".flyte" / "config.yaml"
    cfg.write_text(f"admin:\n  endpoint: dns:///flyte.example.com\n  clientId: ci\n  clientSecretLocation: {tmp_path / 'secret'}\n"
                   "  caCertFilePath: /etc/ssl/certs/ca-certificates.crt\ntask:\n  project: p\n  domain: d\n"
                   "image:\n  builder: local\n  registry: ghcr.io/acme\n")
    env = {**clean_env(), "HOME": str(tmp_path / "home"), "FLYTE_TASK_DOMAIN": "from-env"}
    run = flyte_build("config", "--json", "--org", "from-flag", cwd=root, cache=tmp_path / "c", env=env)
    assert run.rc == 0, run.err
    doc = run.json()
    assert doc["flyte_config"] == str(cfg) and doc["found_by"] == "./.flyte/config.yaml"
    s = {k: (v["value"], v["source"]) for k, v in doc["settings"].items()}
    # every setting of flyte's file, each once: the backend's rows come from the
    # deploy kind's registration, the project, domain and image rows from the core
    assert sorted(doc["settings"]) == sorted([
        "endpoint", "insecure", "insecure_skip_verify", "ca_cert_file_path", "auth_type", "client_id", "client_secret",
        "api_key", "command", "proxy_command", "scopes", "http_proxy_url", "disable_keyring", "org",
        "project", "domain", "image_builder", "image_registry", "image_refs"])
    assert s["endpoint"] == ("dns:///flyte.example.com", f"{cfg}: admin.endpoint")
    assert s["client_id"] == ("ci", f"{cfg}: admin.clientId")
    assert s["client_secret"][0] == "********" and "admin.clientSecretLocation" in s["client_secret"][1]
    assert s["auth_type"][0] == "ClientSecret"  # flyte's rule: a configured secret means client-secret auth
    assert s["ca_cert_file_path"] == ("/etc/ssl/certs/ca-certificates.crt", f"{cfg}: admin.caCertFilePath")
    assert s["project"] == ("from-table", f"{root / 'pyproject.toml'}: tool.hatch.build.targets.flyte.project")
    assert s["domain"] == ("from-env", "$FLYTE_TASK_DOMAIN")
    assert s["org"] == ("from-flag", "flag --org")
    assert s["insecure"][0] is False and s["insecure"][1].endswith("tool.hatch.build.targets.flyte.deploy.insecure")
    assert s["image_builder"] == ("local", f"{cfg}: image.builder")
    assert s["image_registry"] == ("ghcr.io/acme", f"{cfg}: image.registry")
    table = flyte_build("config", cwd=root, cache=tmp_path / "c", env=env)
    assert table.rc == 0 and "client_secret" in table.out
    for out in (run.out, run.err, table.out, table.err):
        assert SECRET not in out


def test_bad_flyte_config_files_are_input_errors(tmp_path):
    root = write_repo(tmp_path / "repo")
    env = {**clean_env(), "HOME": str(tmp_path / "home")}
    (root / ".flyte" / "config.yaml").write_text("task: [unclosed\n")
    for args in (("targets",), ("config",)):
        run = flyte_build(*args, cwd=root, cache=tmp_path / "c", env=env)
        assert run.rc == 2 and "config.yaml" in run.err and "not valid YAML" in run.err, run.err
    (root / ".flyte" / "config.yaml").write_text(f"admin:\n  clientSecretLocation: {tmp_path / 'gone'}\n")
    run = flyte_build("config", cwd=root, cache=tmp_path / "c", env=env)
    assert run.rc == 2 and "gone" in run.err, run.err
    (root / ".flyte" / "config.yaml").write_text("task:\n  domain: d\n")
    bad = flyte_build("config", cwd=root, cache=tmp_path / "c", env={**env, "FLYTE_API_KEY": "not-a-key-XYZ"})
    assert bad.rc == 2 and "FLYTE_API_KEY" in bad.err and "not-a-key-XYZ" not in bad.err
