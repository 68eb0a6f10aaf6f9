"""Secrets never ship by default (issue 15, item 6): every file the adversarial
run found shipped with copy-style `all`, a harmless-named symlink to `.env`,
and a `from_dockerfile` build context holding `.env`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flyte_build.archives import bundle_files as files_mod
from flyte_build.engine.rulesets import builtin
from tests.reliability.test_hostile_repo import BASE, members
from tests.support.repos import Cli, make_repo

df = builtin("image.dockerfile")

pytestmark = pytest.mark.reliability("secrets")

FOUND_SHIPPED = {
    ".kube/config": "users: [{user: {token: x}}]\n",
    ".docker/config.json": '{"auths": {"r": {"auth": "eA=="}}}\n',
    ".aws/config": "[default]\naws_secret_access_key = x\n",
    ".config/gcloud/credentials.db": "x",
    ".config/gcloud/application_default_credentials.json": "{}",
    "infra/terraform.tfstate": "{}",
    "infra/prod.tfvars": "password = \"x\"\n",
    ".vault-token": "s.x\n",
    ".s3cfg": "secret_key = x\n",
    ".boto": "[Credentials]\n",
    "deploy/prod.env": "TOKEN=x\n",
    "conf/secrets.yaml": "token: x\n",
    "conf/secrets.toml": "token = 'x'\n",
    "keys/release.jks": "x",
    "keys/putty.ppk": "x",
    "keys/signing.asc": "-----BEGIN PGP PRIVATE KEY BLOCK-----\n",
    "gcp/sa-key.json": '{"private_key": "x"}\n',
    # a grpc:// cache's token-file (issue 28): a bearer token, an API key
    "ci/reapi.token": "eyJhbGciOiJIUzI1NiJ9.e30.x\n",
    "ci/buildbuddy.apikey": "x\n",
}
NOT_SECRETS = {".env.example": "API_KEY=\n", "conf/settings.yaml": "a: 1\n", "docs/keyboard.json": "{}\n"}


def test_every_secret_the_adversarial_run_shipped_is_left_out(tmp_path):
    root = make_repo(tmp_path / "repo", {**BASE, **FOUND_SHIPPED, **NOT_SECRETS, ".env": "API_KEY=hunter2\n"},
                     pyproject_extra='copy-style = "all"')
    os.symlink(".env", root / "notes.txt")  # a harmless name, the secret's bytes
    res = Cli(root, tmp_path / "cache").build()
    res.assert_ok()
    names = members(res.json())
    leaked = (set(FOUND_SHIPPED) | {".env", "notes.txt"}) & set(names)
    assert not leaked, sorted(leaked)
    assert set(NOT_SECRETS) <= set(names)
    assert not any(b"hunter2" in data for data in names.values())
    warnings = "\n".join(res.json()["warnings"])
    assert "notes.txt (a symlink to .env): looks like a secret" in warnings
    for s in FOUND_SHIPPED:
        assert f"{s}: looks like a secret" in warnings, s


def test_allow_secrets_still_ships_what_it_names(tmp_path):
    root = make_repo(tmp_path / "repo", {**BASE, **FOUND_SHIPPED},
                     pyproject_extra='copy-style = "all"\nallow-secrets = ["deploy/prod.env", ".kube/config"]')
    res = Cli(root, tmp_path / "cache").build()
    res.assert_ok()
    names = members(res.json())
    assert {"deploy/prod.env", ".kube/config"} <= set(names)
    assert not (set(FOUND_SHIPPED) - {"deploy/prod.env", ".kube/config"}) & set(names)
    # and the flag adds to the config's list
    flagged = Cli(root, tmp_path / "cache").build("--allow-secrets", "infra/*.tfvars")
    flagged.assert_ok()
    assert {"deploy/prod.env", ".kube/config", "infra/prod.tfvars"} <= set(members(flagged.json()))


def _render(root: Path, allow=()) -> df.Rendered:
    spec = {"dockerfile": "docker/Dockerfile"}
    return df.render(spec, root, df.Options(allow_secrets=allow), "`a`", lambda rel: {})


def test_dockerfile_build_contexts_are_filtered_the_same_way(tmp_path):
    root = make_repo(tmp_path / "repo", {
        "docker/Dockerfile": "FROM python:3.11\nCOPY . /app\n", "docker/app.py": "print(1)\n",
        "docker/.env": "API_KEY=hunter2\n", "docker/conf/secrets.yaml": "x: 1\n",
    })
    os.symlink(".env", root / "docker" / "readme.txt")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside the root\n")
    os.symlink(outside, root / "docker" / "linked.txt")
    rendered = _render(root)
    names = {n for n, _ in rendered.context}
    assert names == {"Dockerfile", "app.py"}, names
    text = "\n".join(rendered.warnings)
    assert ".env: looks like a secret" in text and "readme.txt (a symlink to docker/.env)" in text
    assert "linked.txt: symlink leads outside the root" in text
    allowed = {n for n, _ in _render(root, ("conf/secrets.yaml",)).context}
    assert "conf/secrets.yaml" in allowed and ".env" not in allowed


@pytest.mark.parametrize("name", sorted(FOUND_SHIPPED) + [".env", "a/b/.env.prod", ".ssh/id_rsa", "x/.azure/msal_token_cache.json"])
def test_the_default_list_names_each(name):
    assert files_mod.is_secret(name)


@pytest.mark.parametrize("name", sorted(NOT_SECRETS) + ["pkg/env.py", "kube/config.py", "docs/aws/config.md"])
def test_ordinary_files_are_not_secrets(name):
    assert not files_mod.is_secret(name)
