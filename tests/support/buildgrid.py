"""BuildGrid, a real REAPI v2 server, on loopback for the grpc:// cache tests.

`.ci/provision.sh` installs it (PyPI `buildgrid`) in a venv of its own under
/tmp/flyte-build-ci/buildgrid (Python 3.13 for 0.9.1; 0.4.4 under 3.11 where no
3.13 exists); `FLYTE_BUILD_BGD` names another `bgd`. A server serves CAS,
ByteStream and an Action Cache from memory, from a small YAML config:

    url = session_server()        # "grpc://127.0.0.1:PORT", or None when bgd is missing
    name = fresh_instance()       # an empty instance no other test of this process uses
    server = BuildGrid.start(tmp) # one of its own (to stop it, or to need a token or TLS)

`grpc.so_reuseport: 0`: a port another process holds fails the start instead of
being shared.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tests.support.servers import free_port

PROVISIONED = "/tmp/flyte-build-ci/buildgrid/bin/bgd"
# the session server's instances: '' for tests whose objects are their own (random
# bytes, made-up keys), one more for each test that builds a shared sample and must
# start from an empty cache. BuildGrid takes ~3 s to start each one.
FRESH = 2


def bgd() -> str | None:
    exe = os.environ.get("FLYTE_BUILD_BGD") or (PROVISIONED if os.access(PROVISIONED, os.X_OK) else shutil.which("bgd"))
    return exe if exe and os.access(exe, os.X_OK) else None


def _config(port: int, instances: list[str], auth: str, tls: tuple[Path, Path] | None) -> str:
    channel = f'  - !channel\n    address: "127.0.0.1:{port}"\n'
    if tls:
        channel += f"    insecure-mode: false\n    credentials:\n      tls-server-key: {tls[1]}\n      tls-server-cert: {tls[0]}\n"
    else:
        channel += "    insecure-mode: true\n"
    parts = [f"server:\n{channel}", "grpc-server-options:\n  grpc.so_reuseport: 0\n", f"authorization:\n{auth}",
             "storages:\n", "caches:\n", "instances:\n"]
    for i, name in enumerate(instances):
        parts[3] += f"  - !lru-storage &s{i}\n    size: 256M\n"
        parts[4] += f"  - !lru-action-cache &a{i}\n    storage: *s{i}\n    max-cached-refs: 10000\n    allow-updates: true\n"
        parts[5] += (f"  - name: '{name}'\n    services:\n      - !action-cache\n        cache: *a{i}\n"
                     f"      - !cas\n        storage: *s{i}\n      - !bytestream\n        storage: *s{i}\n")
    return "".join(parts)


@dataclass
class BuildGrid:
    proc: subprocess.Popen
    port: int
    tls: bool
    log: Path

    @property
    def url(self) -> str:
        return f"{'grpcs' if self.tls else 'grpc'}://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, workdir: Path, instances: list[str] = ("",), secret: str | None = None,
              tls: tuple[Path, Path, Path] | None = None) -> "BuildGrid | None":
        """A server with these instances; `secret`: HS256 JWT bearer tokens required;
        `tls`: (ca, cert, key) PEMs. None when bgd is missing; RuntimeError when it never answered."""
        exe = bgd()
        if exe is None:
            return None
        workdir.mkdir(parents=True, exist_ok=True)
        auth = "  method: none\n"
        if secret is not None:
            (workdir / "jwt.secret").write_text(secret)
            auth = f"  method: jwt\n  secret: {workdir / 'jwt.secret'}\n  algorithm: hs256\n"
        port = free_port()
        cfg = workdir / "buildgrid.yml"
        cfg.write_text(_config(port, list(instances), auth, (tls[1], tls[2]) if tls else None))
        log = workdir / "buildgrid.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([exe, "server", "start", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        server = cls(proc, port, tls is not None, log)
        atexit.register(server.stop)
        if not server.wait(ca=tls[0] if tls else None, token=make_token(secret) if secret else None):
            server.stop()
            # installed but not serving is a failure to see, not a reason to skip
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"{exe} server start {cfg} did not answer GetCapabilities; its log ends:\n{tail}")
        return server

    def wait(self, timeout: float = 120.0, ca: Path | None = None, token: str | None = None) -> bool:
        """Whether GetCapabilities answered within `timeout` (BuildGrid takes ~7 s
        plus ~3 s per instance here, more on a loaded machine)."""
        import grpc

        from flyte_build.stores.reapi_proto import remote_execution_pb2 as pb, remote_execution_pb2_grpc as rpc

        target = f"127.0.0.1:{self.port}"
        deadline = time.monotonic() + timeout
        md = (("authorization", f"Bearer {token}"),) if token else None
        while time.monotonic() < deadline and self.proc.poll() is None:
            creds = grpc.ssl_channel_credentials(Path(ca).read_bytes()) if ca else None
            with (grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)) as ch:
                try:
                    rpc.CapabilitiesStub(ch).GetCapabilities(pb.GetCapabilitiesRequest(), timeout=2, metadata=md)
                    return True
                except grpc.RpcError as exc:
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        return True  # it answered (an unknown instance, say): it is up
                    time.sleep(0.3)
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@lru_cache(maxsize=None)
def _session() -> BuildGrid | None:
    workdir = Path(tempfile.mkdtemp(prefix="flyte-build-buildgrid-"))
    return BuildGrid.start(workdir, ["", *(f"t{i}" for i in range(FRESH))])


_names = itertools.count()


def session_server() -> str | None:
    """Start (once per process) a server with the instances above; its URL (naming
    the instance ''), or None."""
    server = _session()
    return server.url if server else None


def fresh_instance() -> str:
    """An instance of the session server no other test in this process has used."""
    n = next(_names)
    assert n < FRESH, f"raise FRESH in tests/support/buildgrid.py (more than {FRESH} tests want an empty instance)"
    return f"t{n}"


def make_token(secret: str, ttl: float = 3600) -> str:
    """An HS256 JWT with an expiry, as BuildGrid's `jwt` method checks it."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "flyte-build-test", "exp": int(time.time() + ttl)}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"
