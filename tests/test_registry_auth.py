"""image:<env> against a registry that wants a password (docker-registry with htpasswd auth).

flyte-build asks the registry whether a tag is there, and for its digest, with
docker's own credentials: `docker login`'s config.json `auths`, or a credential
helper (`credHelpers`/`credsStore`, the protocol `docker-credential-*` speaks).
One small image is built and pushed once; then fresh caches find it in the
registry without building, through each kind of credentials; and a push with a
wrong password is a clear exit 1 that never shows the password.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support import auth_registry
from tests.support.cli import flyte_build
from tests.support.docker_env import ensure_base_image
from tests.support.requirements import require

pytestmark = pytest.mark.docker

USER = "fb-user"
PASSWORD = f"pw-{uuid.uuid4().hex}"


def _repo(root: Path, addr: str) -> Path:
    repo = root / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text(
        '[project]\nname = "authrepo"\nversion = "0"\n\n[tool.hatch.build.targets.flyte.docker]\nnetwork = "host"\n'
        f'build-args = {{ TEST_SESSION = "{uuid.uuid4().hex}" }}\n'
    )
    (repo / "envs.py").write_text(
        "import flyte\n\n"
        "env = flyte.TaskEnvironment('authenv', image=flyte.Image.from_base('flyte-build-test/python:3.11')"
        f".clone(name='test-registry-auth', registry='{addr}/fb', extendable=True)"
        ".with_commands(['echo \"$TEST_SESSION\" > /auth-proof']))\n"
    )
    return repo


def _login(config_dir: Path, addr: str, password: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "login", addr, "--username", USER, "--password-stdin"], input=password, capture_output=True, text=True,
        timeout=60, env={**os.environ, "DOCKER_CONFIG": str(config_dir)},
    )


def _image(run) -> dict:
    assert run.rc in (0, 1), run.err
    return {t["target"]: t for t in run.json()["targets"]}["image:authenv"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    ensure_base_image()
    require(auth_registry.available(), "docker-registry or the bcrypt package is missing; run `bash .ci/provision.sh` and install the test extra")
    root = tmp_path_factory.mktemp("registry-auth")
    with auth_registry.auth_registry(root / "registry", USER, PASSWORD) as addr:
        logged_in = root / "docker-config"
        login = _login(logged_in, addr, PASSWORD)
        assert login.returncode == 0, login.stderr
        repo = _repo(root, addr)
        first = flyte_build("build", "image:authenv", "--json", cwd=repo, cache=root / "cache", env={"DOCKER_CONFIG": str(logged_in)}, timeout=600)
        assert first.rc == 0, first.err[-3000:]
        yield {"root": root, "addr": addr, "repo": repo, "logged_in": logged_in, "first": _image(first)}
        ids = subprocess.run(["docker", "images", "-q", "--filter", f"reference={addr}/fb/test-registry-auth"],
                             capture_output=True, text=True, timeout=60).stdout.split()
        if ids:
            subprocess.run(["docker", "image", "rm", "-f", *sorted(set(ids))], capture_output=True, timeout=120)


def test_build_pushes_with_docker_login_and_pins_the_digest(registry) -> None:
    r = registry["first"]
    assert r["status"] == "built" and r["docker_build"] is True and r["pushed"] is True, r
    assert r["uri"].startswith(f"{registry['addr']}/fb/test-registry-auth:")
    assert r["image_digest"].startswith("sha256:") and r["pinned"] == f"{registry['addr']}/fb/test-registry-auth@{r['image_digest']}"
    # the registry really wants the password: an anonymous manifest request is refused
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(f"http://{registry['addr']}/v2/fb/test-registry-auth/manifests/{r['tag']}", timeout=10)
    assert refused.value.code == 401


def test_config_json_credentials_give_a_remote_hit_without_building(registry, tmp_path) -> None:
    run = flyte_build("build", "image:authenv", "--json", cwd=registry["repo"], cache=tmp_path / "cache",
                      env={"DOCKER_CONFIG": str(registry["logged_in"])}, timeout=300)
    hit = _image(run)
    assert run.rc == 0 and hit["status"] == "cached" and hit["source"] == "remote", hit
    assert hit["docker_build"] is False and hit["image_digest"] == registry["first"]["image_digest"]


def test_credential_helper_gives_a_remote_hit(registry, tmp_path) -> None:
    # a docker credential helper (the protocol docker-credential-* speak), named by credHelpers
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-fbtest"
    helper.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 1\n'
        "read server\n"
        f'printf \'{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\' "$server"\n'
    )
    helper.chmod(0o755)
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credHelpers": {registry["addr"]: "fbtest"}}))
    run = flyte_build("build", "image:authenv", "--json", cwd=registry["repo"], cache=tmp_path / "cache",
                      env={"DOCKER_CONFIG": str(config), "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}, timeout=300)
    hit = _image(run)
    assert run.rc == 0 and hit["source"] == "remote" and hit["image_digest"] == registry["first"]["image_digest"], hit


def _registry_call(addr: str, method: str, path: str) -> tuple[int, dict]:
    """(status, headers) of an authenticated request to the test registry."""
    import base64
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://{addr}{path}", method=method, headers={
        "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
        "Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"})
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


@pytest.mark.timeout(900)
def test_the_push_is_not_cached_a_hit_publishes_again_what_the_registry_lost(registry, tmp_path) -> None:
    """The cacheable action builds; pushing is a step outside the cache, checked against
    the registry on every run. A cache hit whose tag the registry no longer holds (and
    whose image the engine no longer has) is built again and pushed, not trusted."""
    root = tmp_path / "own"
    root.mkdir()
    repo = _repo(root, registry["addr"])  # a tag of its own: other tests' images stay as they are
    env = {"DOCKER_CONFIG": str(registry["logged_in"])}
    first = _image(flyte_build("build", "image:authenv", "--json", cwd=repo, cache=tmp_path / "cache", env=env, timeout=600))
    assert first["status"] == "built" and first["pushed"] is True, first
    path = f"/v2/fb/test-registry-auth/manifests/{first['image_digest']}"
    assert _registry_call(registry["addr"], "DELETE", path)[0] == 202
    assert _registry_call(registry["addr"], "HEAD", f"/v2/fb/test-registry-auth/manifests/{first['tag']}")[0] == 404
    subprocess.run(["docker", "image", "rm", "-f", first["uri"]], capture_output=True, timeout=120, check=True)

    again = flyte_build("build", "image:authenv", "--json", cwd=repo, cache=tmp_path / "cache", env=env, timeout=600)
    hit = _image(again)
    assert again.rc == 0 and hit["status"] == "cached" and hit["key"] == first["key"], hit
    assert hit["pushed"] is True and hit["pinned"] == f"{registry['addr']}/fb/test-registry-auth@{hit['image_digest']}", hit
    status, headers = _registry_call(registry["addr"], "HEAD", f"/v2/fb/test-registry-auth/manifests/{first['tag']}")
    assert status == 200 and headers.get("Docker-Content-Digest") == hit["image_digest"] == hit["digest"]
    subprocess.run(["docker", "image", "rm", "-f", first["uri"]], capture_output=True, timeout=120)


def test_push_with_a_wrong_password_is_a_clear_exit_1_without_the_secret(registry, tmp_path) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    config = tmp_path / "docker-config"
    config.mkdir()
    # what `docker login` writes, with a password the registry does not know
    import base64

    (config / "config.json").write_text(json.dumps({"auths": {registry["addr"]: {"auth": base64.b64encode(f"{USER}:{wrong}".encode()).decode()}}}))
    p = registry["repo"] / "pyproject.toml"
    p.write_text(p.read_text().replace("TEST_SESSION = ", "TEST_SESSION_BAD_PASSWORD = "))  # a new tag: a real push
    cache = tmp_path / "cache"
    run = flyte_build("build", "image:authenv", cwd=registry["repo"], cache=cache, env={"DOCKER_CONFIG": str(config)}, timeout=600)
    assert run.rc == 1, (run.rc, run.err[-3000:])
    assert f"docker push of {registry['addr']}/fb/test-registry-auth:" in run.err
    assert f"refused the push: log in with `docker login {registry['addr']}`" in run.err
    for text in (run.out, run.err, *(f.read_text(errors="replace") for f in cache.rglob("*.log"))):
        assert wrong not in text and PASSWORD not in text


def test_credentials_are_picked_as_the_docker_client_picks_them(tmp_path, monkeypatch) -> None:
    import base64

    from flyte_build.engine.rulesets import builtin

    docker_engine = builtin("image.docker_engine")

    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-fbstore"
    helper.write_text('#!/bin/sh\nread server\ncase "$server" in *store.example*) printf \'{"Username":"u","Secret":"from-store"}\';; '
                      '*) echo "credentials not found in native keychain"; exit 1;; esac\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    (tmp_path / "config.json").write_text(json.dumps({
        "credsStore": "fbstore",
        "credHelpers": {"helper.example": "missing-helper"},
        "auths": {"https://auths.example/v1/": {"auth": b64("a:from-auths")}, "store.example": {"auth": b64("a:stale")},
                  "helper.example": {"auth": b64("h:from-auths")}},
    }))
    assert docker_engine.registry_credentials("store.example") == ("u", "from-store")  # the store wins over auths
    assert docker_engine.registry_credentials("auths.example") == ("a", "from-auths")  # not in the store: auths (key normalised)
    assert docker_engine.registry_credentials("helper.example") == ("h", "from-auths")  # a helper that is not installed
    assert docker_engine.registry_credentials("nowhere.example") is None
    (tmp_path / "config.json").write_text("{not json")
    assert docker_engine.registry_credentials("store.example") is None  # a broken config is no credentials, not a crash
