"""Issue 24's smaller holes in the stores, the secret filter and the witnesses.

- a file:// store whose fan-out directories are symlinks made the writer write
  its blobs and documents wherever they pointed;
- bundle storage took any object of the right size at a bundle's name as that
  bundle, so a planted one was what Flyte's runtime downloaded;
- a malformed verify key was ignored when no shared cache was set.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from flyte_build.stores import signing
from tests.support import servers
from tests.support.repos import Cli, env_module, make_repo

pytestmark = pytest.mark.reliability("issue 24 smaller items (stores, keys, secrets, witnesses)")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("smaller")
    return make_repo(base / "repo", {"pkg/__init__.py": "", "pkg/a.py": env_module("a")})


def _files_under(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if p.is_file()]


@pytest.mark.parametrize("link", ["cas", "cas/sha256", "ac", "discovery"])
def test_a_file_store_with_a_symlinked_directory_is_not_written_through(repo, tmp_path, link):
    store, outside = tmp_path / "store", tmp_path / "outside"
    outside.mkdir()
    (store / link).parent.mkdir(parents=True, exist_ok=True)
    (store / link).symlink_to(outside)
    # a writer holding the signing key: it publishes every kind of object (discovery results only signed)
    env = {"CI": "", signing.SIGNING_KEY_ENV: signing.keygen()[0]}
    run = Cli(repo, tmp_path / "cache", env=env).build("--cache", f"file://{store}", "--cache-write")
    run.assert_ok()
    assert _files_under(outside) == [], f"the writer wrote through {link} -> {outside}"
    warnings = [w for w in run.json()["warnings"] if "refusing to write through it" in w]
    assert len(warnings) == 1 and f"{link} is a symlink" in warnings[0], run.json()["warnings"]


def _bundle_object(storage: Path) -> Path:
    (obj,) = storage.glob("*.tar.gz")
    return obj


def test_bundle_storage_replaces_a_same_size_object_that_is_not_the_bundle(repo, tmp_path):
    storage = tmp_path / "storage"
    cli = Cli(repo, tmp_path / "cache")
    first = cli.run("--storage", f"file://{storage}", "build", "--json")
    first.assert_ok()
    obj = _bundle_object(storage)
    good = obj.read_bytes()
    obj.write_bytes(b"\0" * len(good))  # planted: the right size, other bytes
    again = Cli(repo, tmp_path / "cache2").run("--storage", f"file://{storage}", "build", "--json")
    again.assert_ok()
    (rec,) = again.json()["targets"]
    assert rec["uploaded"] is True, "the planted object was taken for the bundle"
    assert obj.read_bytes() == good
    assert hashlib.sha256(obj.read_bytes()).hexdigest() + ".tar.gz" == obj.name
    # and an intact object is still left alone
    third = Cli(repo, tmp_path / "cache3").run("--storage", f"file://{storage}", "build", "--json")
    third.assert_ok()
    assert third.json()["targets"][0]["uploaded"] is False


def test_s3_bundle_storage_replaces_a_same_size_object_that_is_not_the_bundle(repo, tmp_path):
    import boto3

    endpoint = servers.s3_bucket("bundles")
    env = {**servers.S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    url = f"s3://bundles/b-{uuid.uuid4().hex[:8]}"
    first = Cli(repo, tmp_path / "cache", env=env).run("--storage", url, "build", "--json")
    first.assert_ok()
    bucket, key = first.json()["targets"][0]["remote"].removeprefix("s3://").split("/", 1)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    good = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=b"\0" * len(good))
    again = Cli(repo, tmp_path / "cache2", env=env).run("--storage", url, "build", "--json")
    again.assert_ok()
    assert again.json()["targets"][0]["uploaded"] is True
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == good


@pytest.mark.parametrize("how", ["env", "config"])
def test_a_malformed_verify_key_is_an_error_without_a_shared_cache(repo, tmp_path, how):
    if how == "env":
        cli = Cli(repo, tmp_path / "cache", env={signing.VERIFY_KEYS_ENV: "not base64!"})
        named = signing.VERIFY_KEYS_ENV
    else:
        root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": env_module("a")},
                         pyproject_extra='cache-verify-keys = ["AAAA"]')
        cli = Cli(root, tmp_path / "cache", env={signing.VERIFY_KEYS_ENV: None})
        named = "cache-verify-keys"
    run = cli.run("build", "--json")
    run.assert_clean_error(2, named)
    assert not (cli.cache_dir / "ac").exists() or not any((cli.cache_dir / "ac").rglob("*.json"))


# -- the secret filter: common secret files it missed --------------------------------

MISSED = {
    ".envrc": "export API_KEY=x\n",
    "gcp/key.json": '{"private_key": "x"}\n',
    "gcp/my-app-firebase-adminsdk-ab12c-0123456789.json": '{"private_key": "x"}\n',
    "gcp/service-account-prod.json": '{"private_key": "x"}\n',
    "gcp/credentials.json": "{}\n",
    "gcp/client_secret_123.apps.googleusercontent.com.json": "{}\n",
    ".my.cnf": "[client]\npassword=x\n",
    ".pgpass": "db:5432:*:u:x\n",
    "krb/service.keytab": "x",
    ".m2/settings.xml": "<servers><server><password>x</password></server></servers>\n",
    ".config/gh/hosts.yml": "github.com:\n  oauth_token: x\n",
    ".netrc": "machine x login u password p\n",
    ".npmrc": "//registry/:_authToken=x\n",
    ".pypirc": "[pypi]\npassword = x\n",
    ".ssh/id_ed25519": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
    "keys/id_rsa": "-----BEGIN RSA PRIVATE KEY-----\n",
    "tls/server.pem": "-----BEGIN PRIVATE KEY-----\n",
    "tls/server.key": "-----BEGIN PRIVATE KEY-----\n",
    "apple/AuthKey_ABC.p8": "-----BEGIN PRIVATE KEY-----\n",
    ".terraformrc": 'credentials "app.terraform.io" { token = "x" }\n',
    ".databrickscfg": "[DEFAULT]\ntoken = x\n",
    ".cargo/credentials.toml": "[registry]\ntoken = 'x'\n",
    ".config/containers/auth.json": '{"auths": {}}\n',
    "vpn/office.ovpn": "<key>x</key>\n",
}
STILL_SHIPPED = {"conf/keys.json": "{}\n", "pkg/key.py": "K = 1\n", "docs/credentials.md": "how to\n", "conf/settings.xml": "<a/>\n"}


def test_common_secret_files_are_left_out_of_bundles(tmp_path):
    from tests.reliability.test_hostile_repo import BASE, members

    root = make_repo(tmp_path / "repo", {**BASE, **MISSED, **STILL_SHIPPED}, pyproject_extra='copy-style = "all"')
    res = Cli(root, tmp_path / "cache").build()
    res.assert_ok()
    names = members(res.json())
    assert not set(MISSED) & set(names), sorted(set(MISSED) & set(names))
    assert set(STILL_SHIPPED) <= set(names)
    warnings = "\n".join(res.json()["warnings"])
    for s in MISSED:
        assert f"{s}: looks like a secret" in warnings, s


def test_common_secret_files_are_left_out_of_image_build_contexts(tmp_path):
    from flyte_build.errors import UserError
    from flyte_build.engine.rulesets import builtin

    df = builtin("image.dockerfile")
    root = make_repo(tmp_path / "repo", {"docker/Dockerfile": "FROM python:3.11\nCOPY . /app\n", "docker/app.py": "x\n",
                                         **{f"docker/{k}": v for k, v in MISSED.items()}, ".envrc": "export X=1\n"})
    rendered = df.render({"dockerfile": "docker/Dockerfile"}, root, df.Options(), "`a`", lambda rel: {})
    assert {n for n, _ in rendered.context} == {"Dockerfile", "app.py"}
    # a layer naming one (with_source_file) is refused, not copied into the context
    spec = {"base_image": "python:3.11-slim", "layers": [{"type": "CopyConfig", "path_type": 0, "src": ".envrc", "dst": "/app"}]}
    with pytest.raises(UserError, match=r"\.envrc: looks like a secret"):
        df.render(spec, root, df.Options(), "`a`", lambda rel: {})
    allowed = df.render(spec, root, df.Options(allow_secrets=(".envrc",)), "`a`", lambda rel: {})
    assert "src/.envrc" in {n for n, _ in allowed.context}


# -- reads the discovery child's witnesses missed ----------------------------------------

PROBES = {
    "os.path.exists": ("os.path.exists(os.path.join(ROOT, 'FLAG'))", "file"),
    "os.path.isfile": ("os.path.isfile(os.path.join(ROOT, 'FLAG'))", "file"),
    "os.path.isdir": ("os.path.isdir(os.path.join(ROOT, 'plugins'))", "dir"),
    "Path.exists": ("(Path(ROOT) / 'FLAG').exists()", "file"),
    "Path.is_file": ("(Path(ROOT) / 'FLAG').is_file()", "file"),
    "os.path.islink": ("os.path.islink(os.path.join(ROOT, 'LINK'))", "link"),
    "Path.is_symlink": ("(Path(ROOT) / 'LINK').is_symlink()", "link"),
    "os.environb": ("b'FEATURE_B' in os.environb", "env"),
    "os.getenvb": ("os.getenvb(b'FEATURE_B') is not None", "env"),
    "/proc/self/environ": ("b'FEATURE_B=' in open('/proc/self/environ', 'rb').read()", "env"),
}


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_an_import_time_decision_on_what_stat_and_environb_see_is_a_witness(tmp_path, probe):
    """A module defines a second environment when a file exists or a variable is
    set, asked in a way no audit event saw: the change must re-run discovery."""
    test, toggle = PROBES[probe]
    module = (f"import os\nfrom pathlib import Path\nimport flyte\nROOT = os.path.dirname(os.path.dirname(__file__))\n"
              f"env = flyte.TaskEnvironment(name='a')\nif {test}:\n    env_b = flyte.TaskEnvironment(name='b')\n")
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": module})
    cli = Cli(root, tmp_path / "cache", env={"FEATURE_B": None})
    first = cli.build()
    first.assert_ok()
    assert set(first.digests()) == {"bundle:a"}
    env = {}
    if toggle == "file":
        (root / "FLAG").write_text("on\n")
    elif toggle == "dir":
        (root / "plugins").mkdir()
    elif toggle == "link":
        (root / "LINK").symlink_to("pkg/__init__.py")
    else:
        env = {"FEATURE_B": "1"}
    second = Cli(root, cli.cache_dir, env=env).build()
    second.assert_ok()
    assert set(second.digests()) == {"bundle:a", "bundle:b"}, f"{probe}: the stale discovery was kept"
    assert second.json()["discovery"]["how"] == "full"
