"""The Docker engine and registries, through python-on-whales and the registry HTTP API.

`build()` runs `docker build` with the client python-on-whales is configured
for, streaming every line to a callback: BuildKit where the client has it (a
buildx plugin, or a pre-23 client that builds with DOCKER_BUILDKIT=1), the
classic builder otherwise. A failed build raises BuildFailed naming the
failing step, with the tail of the log. `manifest_digest()` asks a registry
(HEAD /v2/<name>/manifests/<tag>) whether a tag exists and for its digest,
with docker's own credentials for that registry (`registry_credentials`:
config.json's `credHelpers`, `credsStore` and `auths`), answering a Basic or
a Bearer-token challenge the way the docker client does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flyte_build.rule_api import BuildFailed, UserError

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)
TAIL = 25

def _is_loopback(host: str) -> bool:
    h = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return h in ("localhost", "[::1]") or h.startswith("127.")


@dataclass(frozen=True)
class Builder:
    binary: str  # the docker client to call
    buildkit: bool


def _client_version(binary: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([binary, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.match(r"(\d+)\.(\d+)", out.stdout.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def _has_buildx(binary: str) -> bool:
    try:
        return subprocess.run([binary, "buildx", "version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _candidates() -> list[str]:
    found = []
    for b in (shutil.which("docker"), "/usr/bin/docker"):
        if b and Path(b).exists() and b not in found:
            found.append(b)
    if not found:
        raise BuildFailed("no docker client found on PATH; install Docker to build images")
    return found


def _detect_builder(preference: str) -> Builder:
    """The client and builder to use: `auto`, `buildkit` or `classic`."""
    candidates = _candidates()
    if preference in ("auto", "buildkit"):
        for b in candidates:
            v = _client_version(b)
            if _has_buildx(b) or (v is not None and v < (23, 0)):
                return Builder(b, True)
        if preference == "buildkit":
            raise UserError(
                "Field tool.hatch.build.targets.flyte.docker.builder: `buildkit` asked for, but no docker "
                "client here has BuildKit (no buildx plugin, no pre-23 client); use `auto` or `classic`"
            )
    return Builder(candidates[0], False)


class Docker:
    """One run's Docker: the builder it detected and its registry openers, asked
    for once per run. The engine makes one per run for the image kind
    (`Rule.session`) and hands it to the kind's steps as `req.session`; nothing
    is kept in the process, so a resident process sees a client installed or a
    proxy set since its last run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the openers'
        self._detect_lock = threading.Lock()  # one detection at a time (each runs the client)
        self._builders: dict[str, Builder] = {}
        self._openers: dict[bool, object] = {}

    def builder(self, preference: str = "auto") -> Builder:
        with self._detect_lock:
            if preference not in self._builders:
                self._builders[preference] = _detect_builder(preference)
            return self._builders[preference]

    def opener(self, host: str | None = None):
        """A urllib opener for `host`: registries on loopback are never reached through
        an http_proxy; others go the way urllib's environment says (http(s)_proxy,
        no_proxy). Built on first use, so a build that asks no registry never imports urllib."""
        import urllib.request

        local = host is None or _is_loopback(host)
        with self._lock:
            if local not in self._openers:
                self._openers[local] = (urllib.request.build_opener(urllib.request.ProxyHandler({})) if local
                                        else urllib.request.build_opener())
            return self._openers[local]


def _client(builder: Builder):
    from python_on_whales import DockerClient

    return DockerClient(client_call=[builder.binary])


_STEP = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[[^\]]*\d+/\d+\] .*)$")


def secret_flags(secrets, builder: Builder, where: str) -> list[str]:
    """`docker build --secret` flags for (id, env var, file) records: the value comes from the
    env var when it is set, else from the file (flyte's lookup); the value itself never
    appears on the command line or in the log."""
    if secrets and not builder.buildkit:
        raise UserError(f"{where}: the image uses secret mounts, which need BuildKit; this docker client builds without it "
                        f"(docker.builder = classic, or no buildx plugin and a client newer than 23)")
    flags = []
    for ident, env, path in secrets:
        # flyte's name keeps a key's `-` (FB-TOKEN), which a shell cannot export: FB_TOKEN works too
        names = [n for n in dict.fromkeys([env, env.replace("-", "_")]) if os.environ.get(n)]
        if names:
            flags += ["--secret", f"id={ident},env={names[0]}"]
        elif os.path.isfile(path):
            flags += ["--secret", f"id={ident},src={path}"]
        else:
            alt = f" (or {env.replace('-', '_')})" if "-" in env else ""
            raise UserError(f"{where}: the image build needs a secret: set the environment variable {env}{alt} or create the file {path}")
    return flags


def build(context_dir: Path, dockerfile: Path, tag: str, *, network: str | None, builder: Builder, log: Callable[[str], None],
          labels: dict | None = None, secrets=(), where: str = "") -> str:
    """Build `tag`; returns the image id (sha256:...)."""
    from python_on_whales.exceptions import DockerException
    from python_on_whales.utils import stream_stdout_and_stderr

    flags = secret_flags(secrets, builder, where or tag)
    client = _client(builder)
    iid = context_dir.parent / "image.id"
    cmd = [str(c) for c in client.client_config.docker_cmd] + ["build", "--file", str(dockerfile), "--tag", tag, "--iidfile", str(iid)]
    if network:
        cmd += ["--network", network]
    for k, v in sorted((labels or {}).items()):
        cmd += ["--label", f"{k}={v}"]
    if builder.buildkit:
        cmd += ["--progress", "plain"]
    cmd += flags
    cmd.append(str(context_dir))
    env = {"DOCKER_BUILDKIT": "1" if builder.buildkit else "0"}
    log(f"$ DOCKER_BUILDKIT={env['DOCKER_BUILDKIT']} {' '.join(cmd)}")
    lines: list[str] = []
    step = None
    try:
        for _, raw in stream_stdout_and_stderr(cmd, env=env):
            line = raw.decode("utf-8", "replace").rstrip()
            lines.append(line)
            if _STEP.match(line):
                step = line
            log(line)
    except DockerException as exc:
        tail = "\n".join([ln for ln in lines if ln.strip()][-TAIL:]) or str(exc)
        where = f" at {step}" if step else ""
        raise BuildFailed(f"docker build of {tag} failed{where}\n--- last lines of the build log ---\n{tail}") from None
    try:
        return iid.read_text().strip()
    except OSError:
        return client.image.inspect(tag).id


def _engine_call(what: str, call):
    """`call()`, a python-on-whales call; its failure as one line naming what
    failed and the engine's own reason (an unreachable engine says where it looked)."""
    from python_on_whales.exceptions import DockerException

    try:
        return call()
    except DockerException as exc:
        said = [ln.strip() for ln in (exc.stderr or "").splitlines() if ln.strip()]
        raise BuildFailed(f"docker {what} failed: {said[-1] if said else f'exit {exc.return_code}'}") from None


def image_exists(tag: str, builder: Builder) -> bool:
    return _engine_call(f"image inspect {tag}", lambda: _client(builder).image.exists(tag))


def image_facts(tag: str, builder: Builder) -> tuple[str, int | None]:
    """(image id, size in bytes) of a local image."""
    image = _engine_call(f"image inspect {tag}", lambda: _client(builder).image.inspect(tag))
    return image.id, getattr(image, "size", None)


def push(docker: Docker, tag: str, builder: Builder, log: Callable[[str], None]) -> str | None:
    """Push `tag`; returns the pushed manifest's digest (sha256:...)."""
    from python_on_whales.exceptions import DockerException

    digest = None
    lines: list[str] = []
    try:
        for _, raw in _client(builder).image.push(tag, stream_logs=True) or ():
            line = raw.decode("utf-8", "replace").rstrip() if isinstance(raw, bytes) else str(raw).rstrip()
            lines.append(line)
            log(line)
            m = re.search(r"digest: (sha256:[0-9a-f]{64})", line)
            if m:
                digest = m.group(1)
    except DockerException as exc:
        said = "\n".join([*lines, *(exc.stderr or "").splitlines()])
        tail = "\n".join([ln for ln in said.splitlines() if ln.strip()][-TAIL:]) or f"exit {exc.return_code}"
        hint = ""
        if re.search(r"unauthorized|authentication required|denied|401|403", said, re.IGNORECASE):
            host = split_uri(tag)[0] or "docker.io"
            hint = (f": the registry {host} refused the push: log in with `docker login {host}` (flyte-build uses docker's "
                    f"credentials: {docker_config_path()} and its credsStore/credHelpers)")
        raise BuildFailed(f"docker push of {tag} failed{hint}\n--- last lines ---\n{tail}") from None
    return digest or manifest_digest(docker, tag)


def split_uri(uri: str) -> tuple[str | None, str, str]:
    """(registry host or None, repository, tag) of NAME[:TAG]; a host has a '.' or ':' or is localhost."""
    name, tag = uri, "latest"
    if "@" in name:
        name = name.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest, tag
    return None, name, tag


def _scheme(host: str) -> str:
    return "http" if _is_loopback(host) else "https"


# -- docker's credentials ---------------------------------------------------------
def docker_config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def _config_host(key: str) -> str:
    """The registry host of a config.json key (`https://ghcr.io`, `ghcr.io/v1/`, `ghcr.io`)."""
    return re.sub(r"^[a-z]+://", "", key).split("/", 1)[0]


def _from_helper(helper: str, host: str) -> tuple[str, str] | None:
    """Ask `docker-credential-<helper> get` (docker's credential-helper protocol)."""
    import json

    for server in (host, f"https://{host}"):
        try:
            proc = subprocess.run([f"docker-credential-{helper}", "get"], input=server, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode == 0:
            try:
                doc = json.loads(proc.stdout)
            except ValueError:
                return None
            if isinstance(doc, dict) and doc.get("Secret"):
                return str(doc.get("Username") or ""), str(doc["Secret"])
    return None


def registry_credentials(host: str) -> tuple[str, str] | None:
    """(username, password or token) docker holds for `host`, as the docker client picks
    them: `credHelpers[host]`, else `credsStore`, else the `auths` entry; None if none.
    Never logged, never part of a key."""
    import base64
    import json

    try:
        cfg = json.loads(docker_config_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    helpers = cfg.get("credHelpers") if isinstance(cfg.get("credHelpers"), dict) else {}
    helper = next((v for k, v in helpers.items() if _config_host(k) == host), None) or cfg.get("credsStore")
    if isinstance(helper, str) and helper:
        found = _from_helper(helper, host)
        if found:
            return found
    auths = cfg.get("auths") if isinstance(cfg.get("auths"), dict) else {}
    for key, entry in auths.items():
        if _config_host(key) != host or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return user, password
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
        if entry.get("identitytoken"):
            return "<token>", str(entry["identitytoken"])
    return None


def _challenge(header: str) -> tuple[str, dict]:
    """('basic'|'bearer', params) of a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


def _registry_open(docker: Docker, host: str, repo: str, req, timeout: float):
    """Open `req` against the registry, answering its 401 challenge with docker's credentials
    (Basic, or a Bearer token from the challenge's realm) the way the docker client does."""
    import base64
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    try:
        return docker.opener(host).open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 401:
            raise
        scheme, params = _challenge(exc.headers.get("WWW-Authenticate", ""))
    creds = registry_credentials(host)
    basic = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode() if creds else None
    if scheme == "basic":
        if basic is None:
            raise urllib.error.URLError(f"{host} wants credentials and docker has none for it")
        req.add_header("Authorization", basic)
        return docker.opener(host).open(req, timeout=timeout)
    if scheme != "bearer" or not params.get("realm"):
        raise urllib.error.URLError(f"{host}: unsupported authentication challenge")
    query = {"scope": params.get("scope") or f"repository:{repo}:pull"}
    if params.get("service"):
        query["service"] = params["service"]
    token_req = urllib.request.Request(params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(query))
    if basic:
        token_req.add_header("Authorization", basic)
    realm_host = urllib.parse.urlsplit(params["realm"]).netloc
    with docker.opener(realm_host).open(token_req, timeout=timeout) as resp:
        doc = json.loads(resp.read().decode("utf-8"))
    token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
    if not token:
        raise urllib.error.URLError(f"{host}: the token service gave no token")
    req.add_header("Authorization", f"Bearer {token}")
    return docker.opener(host).open(req, timeout=timeout)


def manifest_digest(docker: Docker, uri: str, timeout: float = 10.0) -> str | None:
    """The digest the registry reports for `uri`, or None when it lacks the tag or cannot say."""
    host, repo, tag = split_uri(uri)
    if host is None:
        return None  # Docker Hub: not asked (its token service is not reachable from where this is tested)
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{_scheme(host)}://{host}/v2/{repo}/manifests/{tag}", method="HEAD", headers={"Accept": MANIFEST_TYPES})
    try:
        with _registry_open(docker, host, repo, req, timeout) as resp:
            return resp.headers.get("Docker-Content-Digest")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def registry_reachable(docker: Docker, uri: str, timeout: float = 3.0) -> bool:
    host, _, _ = split_uri(uri)
    if host is None:
        return False
    import urllib.error

    try:
        with docker.opener(host).open(f"{_scheme(host)}://{host}/v2/", timeout=timeout) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # there, but wants a token
    except (urllib.error.URLError, OSError, ValueError):
        return False
