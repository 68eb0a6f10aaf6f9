"""Real object-store servers on loopback for tests: moto's S3 server, the
GCS storage emulator and Azurite (Azure Blob Storage's emulator, from npm),
each started once per test session on a free port.

Use through the pytest fixtures in `tests/conftest.py`-style modules:

    endpoint = s3_server()          # "http://127.0.0.1:PORT", or None if moto is missing
    make_bucket(endpoint, "name")   # buckets are made with boto3 (s3fs.mkdir trips moto)
    gcs = gcs_server()              # "http://127.0.0.1:PORT", or None
    make_gcs_bucket(gcs, "name")
    az = azurite_server()           # Azurite's connection string, or None
    make_azure_container(az, "name")

Both servers keep their data in memory and die with the test process.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from functools import lru_cache

# Dummy credentials: moto accepts any; set them so nothing reaches for real ones.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port_url() -> str:
    """An endpoint nothing listens on: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


class SilentServer:
    """A socket that accepts connections and never answers: a store that times out."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


def _wait_http(url: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return True
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:
            time.sleep(0.1)
    return False


def _start(cmd: list[str], url: str) -> str | None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(_stop, proc)
    if not _wait_http(url):
        _stop(proc)
        return None
    return url


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


@lru_cache(maxsize=None)
def s3_server() -> str | None:
    """Start (once) moto's S3 server; its endpoint URL, or None if moto is not installed."""
    exe = shutil.which("moto_server")
    if exe is None:
        return None
    port = free_port()
    os.environ.update({k: os.environ.get(k, v) for k, v in S3_ENV.items()})
    url = _start([exe, "-H", "127.0.0.1", "-p", str(port)], f"http://127.0.0.1:{port}/")
    return url.rstrip("/") if url else None


def s3_server_checking_signatures(unchecked: int) -> str | None:
    """A new moto S3 (and IAM) server that checks every request's SigV4 signature
    after its first `unchecked` actions (moto's INITIAL_NO_AUTH_ACTION_COUNT, read
    when it starts: hence its own process); its endpoint, or None without moto."""
    exe = shutil.which("moto_server")
    if exe is None:
        return None
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(unchecked)})
    atexit.register(_stop, proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # a TCP connect, not a request: a request would count as an action
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    _stop(proc)
    return None


def s3_bucket(name: str) -> str:
    """moto's S3 server (started once) holding bucket `name`: its endpoint. A
    test needing it is skipped without moto (a failure under strict mode)."""
    from .requirements import require

    endpoint = s3_server()
    require(endpoint is not None, "moto's S3 server (pip install 'moto[server]')")
    make_bucket(endpoint, name)
    return endpoint


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, **{
        "aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"})
    try:
        s3.create_bucket(Bucket=name)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


@lru_cache(maxsize=None)
def gcs_server() -> str | None:
    """Start (once) the GCS storage emulator; its endpoint URL, or None if not installed."""
    exe = shutil.which("gcp-storage-emulator")
    if exe is None:
        return None
    port = free_port()
    url = _start([exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"], f"http://127.0.0.1:{port}/")
    if url:
        url = url.rstrip("/")
        # gcsfs reads these at import time; without the second every call waits on a gRPC probe
        os.environ["STORAGE_EMULATOR_HOST"] = url
        os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    return url


def make_gcs_bucket(endpoint: str, name: str) -> None:
    import json

    req = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=test",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        urllib.request.urlopen(req, timeout=10).close()
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # already exists
            raise


# Azurite's documented development account (public, the same in every install)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(endpoint: str) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};")


@lru_cache(maxsize=None)
def azurite_server() -> str | None:
    """Start (once) Azurite's blob service in memory; its connection string, or
    None when Azurite is not installed (`npm install -g azurite`)."""
    exe = shutil.which("azurite-blob")
    if exe is None:
        return None
    port = free_port()
    url = _start([exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence", "--silent",
                  "--disableTelemetry", "--skipApiVersionCheck"], f"http://127.0.0.1:{port}/")
    return azurite_connection_string(url.rstrip("/")) if url else None


def make_azure_container(connection_string: str, name: str) -> None:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    try:
        BlobServiceClient.from_connection_string(connection_string).create_container(name)
    except ResourceExistsError:
        pass


def child_env(**extra: str) -> dict[str, str]:
    """The environment a `flyte-build` child process should run with to reach the servers."""
    env = dict(os.environ)
    env.update(S3_ENV)
    env.update(extra)
    return env


__all__ = [
    "SilentServer", "azurite_connection_string", "azurite_server", "closed_port_url", "free_port", "gcs_server",
    "make_azure_container", "make_bucket", "make_gcs_bucket", "s3_server", "child_env",
]
