"""The Docker engine and registries, through python-on-whales and the registry HTTP API.

`build()` runs `docker build` with the client python-on-whales is configured
for, streaming every line to a callback: BuildKit where the client has it (a
buildx plugin, or a pre-23 client that builds with DOCKER_BUILDKIT=1), the
classic builder otherwise. A failed build raises BuildFailed naming the
failing step, with the tail of the log. `manifest_digest()` asks a registry
(HEAD /v2/<name>/manifests/<tag>) whether a tag exists and for its digest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import BuildFailed, UserError

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)
TAIL = 25

# registries on loopback must not be reached through an http_proxy
_opener_lock = threading.Lock()
_opener_cache: list = []


def _opener():
    """A urllib opener that ignores proxies (the registry is on loopback); built
    on first use so a build that asks no registry never imports urllib."""
    import urllib.request

    with _opener_lock:
        if not _opener_cache:
            _opener_cache.append(urllib.request.build_opener(urllib.request.ProxyHandler({})))
        return _opener_cache[0]
_detect_lock = threading.Lock()
_detected: dict[str, "Builder"] = {}


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


def detect_builder(preference: str = "auto") -> Builder:
    """The client and builder to use: `auto`, `buildkit` or `classic`."""
    with _detect_lock:
        if preference in _detected:
            return _detected[preference]
        candidates = []
        for b in (shutil.which("docker"), "/usr/bin/docker"):
            if b and Path(b).exists() and b not in candidates:
                candidates.append(b)
        if not candidates:
            raise BuildFailed("no docker client found on PATH; install Docker to build images")
        chosen = None
        if preference in ("auto", "buildkit"):
            for b in candidates:
                v = _client_version(b)
                if _has_buildx(b) or (v is not None and v < (23, 0)):
                    chosen = Builder(b, True)
                    break
            if chosen is None and preference == "buildkit":
                raise UserError(
                    "Field tool.hatch.build.targets.flyte.docker.builder: `buildkit` asked for, but no docker "
                    "client here has BuildKit (no buildx plugin, no pre-23 client); use `auto` or `classic`"
                )
        chosen = chosen or Builder(candidates[0], False)
        _detected[preference] = chosen
        return chosen


def _client(builder: Builder):
    from python_on_whales import DockerClient

    return DockerClient(client_call=[builder.binary])


_STEP = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[[^\]]*\d+/\d+\] .*)$")


def build(context_dir: Path, dockerfile: Path, tag: str, *, network: str | None, builder: Builder, log: Callable[[str], None], labels: dict | None = None) -> str:
    """Build `tag`; returns the image id (sha256:...)."""
    from python_on_whales.exceptions import DockerException
    from python_on_whales.utils import stream_stdout_and_stderr

    client = _client(builder)
    iid = context_dir.parent / "image.id"
    cmd = [str(c) for c in client.client_config.docker_cmd] + ["build", "--file", str(dockerfile), "--tag", tag, "--iidfile", str(iid)]
    if network:
        cmd += ["--network", network]
    for k, v in sorted((labels or {}).items()):
        cmd += ["--label", f"{k}={v}"]
    if builder.buildkit:
        cmd += ["--progress", "plain"]
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


def image_exists(tag: str, builder: Builder) -> bool:
    return _client(builder).image.exists(tag)


def image_id(tag: str, builder: Builder) -> str:
    return _client(builder).image.inspect(tag).id


def push(tag: str, builder: Builder, log: Callable[[str], None]) -> str | None:
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
        tail = "\n".join(lines[-TAIL:]) or str(exc)
        raise BuildFailed(f"docker push of {tag} failed\n--- last lines ---\n{tail}") from None
    return digest or manifest_digest(tag)


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
    h = host.split(":")[0]
    return "http" if h in ("localhost",) or h.startswith("127.") else "https"


def manifest_digest(uri: str, timeout: float = 10.0) -> str | None:
    """The digest the registry reports for `uri`, or None when it lacks the tag or cannot say."""
    host, repo, tag = split_uri(uri)
    if host is None:
        return None  # Docker Hub and friends need tokens; no check
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{_scheme(host)}://{host}/v2/{repo}/manifests/{tag}", method="HEAD", headers={"Accept": MANIFEST_TYPES})
    try:
        with _opener().open(req, timeout=timeout) as resp:
            return resp.headers.get("Docker-Content-Digest")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def registry_reachable(uri: str, timeout: float = 3.0) -> bool:
    host, _, _ = split_uri(uri)
    if host is None:
        return False
    import urllib.error

    try:
        with _opener().open(f"{_scheme(host)}://{host}/v2/", timeout=timeout) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # there, but wants a token
    except (urllib.error.URLError, OSError, ValueError):
        return False
