"""Deploys authenticate from flyte's own config file, one file per auth type.

The local control plane (tests/support/controlplane.py) serves TLS with a
test CA (flyte sends credentials only over TLS) and demands a bearer token on
every call; it serves the OAuth2 metadata and a token endpoint on loopback,
and records what it received. Each test writes the config.yaml a user would
write for `flyte deploy`, runs `flyte-build --config FILE deploy` and asserts
on what reached the server. Auth types that need a person at a browser
(PKCE, device flow) are checked up to the client flyte constructs.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest

from tests.support import controlplane, tls
from tests.support.cli import Run, flyte_build
from tests.support.requirements import require

pytestmark = pytest.mark.servers

CLIENT_ID, SECRET = "ci-deployer", "s3cr3t-Cl1ent-VALUE"
KEY_ID, KEY_SECRET = "api-app", "k3y-S3CRET-value-0042"
CMD_TOKEN = "cmd-T0KEN-abc"
IMG = "127.0.0.1:9/flyte-build-test/auth:1"  # a reference only: nothing is built or pulled


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ok, why = controlplane.available()
    require(ok, why)
    cert = tls.make(tmp_path_factory.mktemp("tls"))
    auth = controlplane.Auth(clients={CLIENT_ID: SECRET, KEY_ID: KEY_SECRET}, static_tokens={CMD_TOKEN})
    cp = controlplane.ControlPlane.start(auth=auth, tls=cert)
    yield cp, cert
    cp.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("authrepo")
    (root / "pyproject.toml").write_text('[project]\nname = "t"\nversion = "0"\n')
    (root / "svc.py").write_text(
        "import flyte\n\n"
        f'env = flyte.TaskEnvironment(name="authsvc", image="{IMG}")\n\n\n'
        "@env.task\nasync def double(x: int) -> int:\n    return 2 * x\n"
    )
    return root


def write_config(path: Path, cp, cert, project: str, **admin) -> Path:
    lines = ["admin:", f"  endpoint: dns:///{cp.endpoint.split('://', 1)[1]}", f"  caCertFilePath: {cert.ca}",
             "  disableKeyring: true"]
    for k, v in admin.items():
        lines.append(f"  {k}: {json.dumps(v)}")
    lines += ["task:", f"  project: {project}", "  domain: development", ""]
    path.write_text("\n".join(lines))
    return path


def deploy(repo: Path, config: Path, cache: Path, extra_env: dict | None = None, *flags: str) -> Run:
    # none of this machine's flyte settings: only the config file and the variables a test sets
    env = {k: None for k in os.environ if k.startswith(("FLYTE_", "FLYTECTL_", "UCTL_")) and k != "FLYTE_BUILD_CACHE_DIR"}
    env.update({"PYTHONHASHSEED": "0", **(extra_env or {})})
    # the env's image is a name no registry serves: these tests are about
    # credentials, so the pre-deploy check (which would start it) is off
    return flyte_build("--config", str(config), "deploy", "--json", "--no-check", *flags, cwd=repo, cache=cache, env=env)


def calls_for(cp, project: str) -> list[tuple[str, str | None, str | None]]:
    """(method, authorization, proxy-authorization) of each attempt of the calls a deploy to `project` made."""
    out = []
    for (method, req), seen in zip(cp.calls, cp.auth_seen):
        p = getattr(getattr(req, "task_id", None), "project", None) or getattr(req, "project", None)
        if p == project:
            out.append(seen)
    return out


def authorized(cp, project: str) -> set[str]:
    """The methods called for `project` with a bearer token the token endpoint issued."""
    return {m for m, a, _ in calls_for(cp, project) if a and a.startswith("Bearer ") and a[7:] in cp.issued}


def assert_deployed(proc) -> dict:
    assert proc.rc == 0, proc.err + proc.out
    doc = json.loads(proc.out)
    assert doc["deployed"] == ["authsvc"] and doc["failed"] == [], doc
    return doc


def assert_no_secret(proc, cache: Path, *secrets: str) -> None:
    files = [p for p in cache.rglob("*") if p.is_file()]
    for s in secrets:
        assert s not in proc.out and s not in proc.err, s
        for f in files:
            assert s.encode() not in f.read_bytes(), (s, f)


def test_client_secret_from_a_file(server, repo, tmp_path):
    cp, cert = server
    (tmp_path / "secret").write_text(SECRET + "\n")
    cfg = write_config(tmp_path / "config.yaml", cp, cert, "p-file", authType="ClientSecret", clientId=CLIENT_ID,
                       clientSecretLocation=str(tmp_path / "secret"))
    before = len(cp.token_requests)
    proc = deploy(repo, cfg, tmp_path / "cache")
    assert_deployed(proc)
    # the token endpoint saw our client id with the right secret (HTTP basic auth)
    got = cp.token_requests[before:]
    assert got and {(t["client_id"], t["accepted"], t["grant_type"]) for t in got} == {(CLIENT_ID, True, "client_credentials")}
    # the upload and the task registration went through with a token it issued
    assert authorized(cp, "p-file") >= {"CreateUploadLocation", "DeployTask"}
    assert_no_secret(proc, tmp_path / "cache", SECRET)


def test_client_secret_from_an_env_variable(server, repo, tmp_path):
    cp, cert = server
    cfg = write_config(tmp_path / "config.yaml", cp, cert, "p-env", clientId=CLIENT_ID, clientSecretEnvVar="MY_CI_SECRET")
    before = len(cp.token_requests)
    proc = deploy(repo, cfg, tmp_path / "cache", {"MY_CI_SECRET": SECRET})
    assert_deployed(proc)  # no authType: flyte switches to ClientSecret when a secret is configured
    got = cp.token_requests[before:]
    assert got and {(t["client_id"], t["accepted"]) for t in got} == {(CLIENT_ID, True)}
    assert "DeployTask" in authorized(cp, "p-env")
    assert_no_secret(proc, tmp_path / "cache", SECRET)


def api_key(client_id: str, secret: str) -> str:
    # flyte's format: base64 of "endpoint:client-id:secret:org", split on the
    # first three colons, so the key's endpoint is a bare host (no port)
    return base64.b64encode(f"flyte.example.com:{client_id}:{secret}:".encode()).decode()


def test_api_key_and_a_wrong_api_key(server, repo, tmp_path):
    cp, cert = server
    # FLYTE_API_KEY, as `flyte` reads it: client id and secret come from the key;
    # its endpoint (a bare host, so port 443) yields to --endpoint, as with `flyte --endpoint`
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"admin:\n  caCertFilePath: {cert.ca}\n  disableKeyring: true\ntask:\n  project: p-key\n  domain: development\n")
    before = len(cp.token_requests)
    endpoint = f"dns:///{cp.endpoint.split('://', 1)[1]}"
    good = deploy(repo, cfg, tmp_path / "cache", {"FLYTE_API_KEY": api_key(KEY_ID, KEY_SECRET)}, "--endpoint", endpoint)
    assert_deployed(good)
    got = cp.token_requests[before:]
    assert got and {(t["client_id"], t["accepted"]) for t in got} == {(KEY_ID, True)}
    assert "DeployTask" in authorized(cp, "p-key")
    key = api_key(KEY_ID, KEY_SECRET)
    assert_no_secret(good, tmp_path / "cache", KEY_SECRET, key)

    # the same client id with a wrong secret: refused, exit 1, nothing of the key echoed
    wrong_secret = "wrong-S3CRET-9911"
    wrong = api_key(KEY_ID, wrong_secret)
    cfg.write_text(cfg.read_text().replace("p-key", "p-wrong"))
    before = len(cp.token_requests)
    proc = deploy(repo, cfg, tmp_path / "cache2", {"FLYTE_API_KEY": wrong}, "--endpoint", endpoint)
    assert proc.rc == 1, proc.err
    doc = json.loads(proc.out)
    assert doc["failed"] == ["authsvc"] and doc["deployed"] == []
    assert "refused the credentials" in proc.err + proc.out and "FLYTE_API_KEY" in proc.err + proc.out
    assert cp.token_requests[before:] and not any(t["accepted"] for t in cp.token_requests[before:])
    assert not authorized(cp, "p-wrong")
    assert_no_secret(proc, tmp_path / "cache2", wrong_secret, wrong)


def test_external_command(server, repo, tmp_path):
    cp, cert = server
    cmd = [sys.executable, "-c", f"print('{CMD_TOKEN}')"]
    cfg = write_config(tmp_path / "config.yaml", cp, cert, "p-cmd", authType="ExternalCommand", command=cmd)
    proc = deploy(repo, cfg, tmp_path / "cache")
    assert_deployed(proc)
    seen = calls_for(cp, "p-cmd")
    assert seen and seen[-1] == ("DeployTask", f"Bearer {CMD_TOKEN}", None)
    assert not cp.token_requests or all(t["client_id"] != "cmd" for t in cp.token_requests)


@pytest.mark.parametrize("auth_type,cls", [("Pkce", "PKCEAuthenticator"), ("DeviceFlow", "DeviceCodeAuthenticator")])
def test_browser_flows_are_read_and_constructed(auth_type, cls, tmp_path, monkeypatch):
    """PKCE and device flow need a person at a browser: check that the config is
    read (through flyte-build's own resolution) and that flyte's client is built
    with that authenticator, its client id and scopes, against the right endpoint."""
    import asyncio

    from flyte_build import flyte_adapter as fa
    from flyte_build import flyte_config

    for k in [k for k in os.environ if k.startswith("FLYTE_")]:
        monkeypatch.delenv(k)
    cert = tls.make(tmp_path / "tls")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"admin:\n  endpoint: dns:///127.0.0.1:9\n  authType: {auth_type}\n  clientId: cli-app\n"
                   f"  scopes: [offline, all]\n  caCertFilePath: {cert.ca}\n  disableKeyring: true\n")
    from flyte_build.config import settings as config_mod
    from flyte_build.engine import rulesets

    backend = rulesets.builtin("deploy.backend_settings")
    loaded = flyte_config.load(flyte_config.locate(str(cfg)))
    table_cfg = config_mod.from_table({}, tmp_path, None)
    values = {k: s.value for k, s in backend.effective(loaded, table_cfg, rulesets.builtin("deploy.params").DeployParams()).items()}
    assert (values["auth_type"], values["client_id"], values["scopes"]) == (auth_type, "cli-app", ["offline", "all"])

    async def build():
        return await fa.make_client(fa.client_kwargs(values))

    client = asyncio.run(build())  # contacts nothing: authenticators start on the first call
    session = client._session_config
    assert session.endpoint == "https://127.0.0.1:9"
    assert session.auth_kwargs["auth_type"] == auth_type and session.auth_kwargs["client_id"] == "cli-app"
    assert session.tls_ca_cert == cert.ca.read_bytes()
    authenticators = {type(i.authenticator).__name__ for i in session.interceptors if hasattr(i, "authenticator")}
    assert authenticators == {cls}


def test_an_app_deploys_with_the_same_client_settings_as_tasks(server, tmp_path):
    """An app env's Create goes through the client the task deploys use (TLS with the
    config's CA certificate, client-secret auth), not a bare one for the endpoint."""
    cp, cert = server
    root = tmp_path / "apprepo"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "t"\nversion = "0"\n')
    (root / "web.py").write_text(
        "import flyte\nimport flyte.app\n\n"
        f'web_env = flyte.app.AppEnvironment(name="authweb", image="{IMG}", port=8080, args=["python", "-m", "http.server"])\n')
    (tmp_path / "secret").write_text(SECRET + "\n")
    cfg = write_config(tmp_path / "config.yaml", cp, cert, "p-app", authType="ClientSecret", clientId=CLIENT_ID,
                       clientSecretLocation=str(tmp_path / "secret"))
    proc = deploy(root, cfg, tmp_path / "cache")
    assert proc.rc == 0, proc.err + proc.out
    assert json.loads(proc.out)["deployed"] == ["authweb"]
    creates = [seen for (method, req), seen in zip(cp.calls, cp.auth_seen)
               if method == "CreateApp" and req.app.metadata.id.project == "p-app"]
    # flyte's client first calls without a token; its retry carries one the token endpoint issued
    assert any(a and a.startswith("Bearer ") and a[7:] in cp.issued for _, a, _ in creates), creates
    assert_no_secret(proc, tmp_path / "cache", SECRET)
