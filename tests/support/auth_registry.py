"""A second local registry that wants a password: `docker-registry` (Debian's
package, the distribution registry) with `auth: htpasswd`, on a free loopback
port, storing under a temporary directory.

    with auth_registry(tmp_path, "fb", "s3cret") as addr:   # "127.0.0.1:PORT"
        ...

The engine treats every 127.0.0.0/8 registry as insecure, so `docker login`
and `docker push` work over plain HTTP. bcrypt entries come from the `bcrypt`
package (the test extra). The server is stopped when the block ends.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.servers import free_port

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def available() -> bool:
    if shutil.which("docker-registry") is None:
        return False
    try:
        import bcrypt  # noqa: F401
    except ImportError:
        return False
    return True


def _answers(addr: str) -> bool:
    try:
        _opener.open(f"http://{addr}/v2/", timeout=1).close()
        return True
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # up, and asking for credentials
    except OSError:
        return False


@contextlib.contextmanager
def auth_registry(workdir: Path, user: str, password: str):
    import bcrypt

    workdir.mkdir(parents=True, exist_ok=True)
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    addr = f"127.0.0.1:{free_port()}"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {addr}\n"
        f"auth:\n  htpasswd:\n    realm: flyte-build-test\n    path: {htpasswd}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not _answers(addr):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry with htpasswd auth did not start on {addr}")
            time.sleep(0.1)
        yield addr
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
