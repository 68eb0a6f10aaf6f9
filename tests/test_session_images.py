"""A test session removes the Docker images it made when it ends, and only those.

On the vfs storage driver each image is a full copy; the per-session images two
sessions left behind once filled a 100 GB disk. Real pytest sessions run here as
child processes with tests/support/session_images.py as their plugin (what
tests/conftest.py loads), against the real engine, while this test's own
session, still running, has a per-session base of its own:

- "made" makes a per-session base (`docker_env.session_image`), builds an image
  FROM it and tags one of its own on the shared base (`own`): when it has ended,
  none of the three exists, while the shared base and this session's base do;
- "killed" makes a per-session base and is killed (SIGKILL: no session end):
  its base stays;
- "later" makes nothing: its end removes the killed session's base (its owner
  is gone), and still not this running session's.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.support.docker_env import BASE_IMAGE, ensure_base_image, image_present, session_image

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent('''
    import json, os, signal, subprocess, uuid
    # the Debian client builds with BuildKit (a newer docker on PATH may lack buildx), as docker_env does
    from pathlib import Path

    from tests.support import docker_env, session_images

    MODE = os.environ["SESSION_IMAGES_MODE"]


    def test_make_images():
        names = {}
        if MODE in ("made", "killed"):
            names["base"] = docker_env.session_image(os.environ["SESSION_IMAGES_BASE"], f"test_session_images-{MODE}")
        if MODE == "made":
            names["built"] = f"test_session_images-built/img:{uuid.uuid4().hex[:12]}"
            subprocess.run(["/usr/bin/docker", "build", "--network", "host", "--tag", names["built"], "-"],
                           input=f"FROM {names['base']}\\nRUN echo built > /built\\n".encode(),
                           env={**os.environ, "DOCKER_BUILDKIT": "1"}, capture_output=True, timeout=300, check=True)
            names["owned"] = session_images.own(f"test_session_images-owned/img:{uuid.uuid4().hex[:12]}")
            subprocess.run(["docker", "tag", docker_env.BASE_IMAGE, names["owned"]], timeout=60, check=True)
        assert all(docker_env.image_present(n) for n in names.values())
        Path(os.environ["SESSION_IMAGES_OUT"]).write_text(json.dumps(names))
        if MODE == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
''')


def _small_base(tmp_path: Path) -> str:
    """A real image of a few MB, a shell and the C library: on vfs each layer built on
    it copies those megabytes, not the 191 MB of the Python base (the behaviour here
    does not depend on what the base holds)."""
    ldd = subprocess.run(["ldd", "/bin/dash"], capture_output=True, text=True, timeout=30, check=True).stdout
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in ["/bin/dash", *re.findall(r"(/\S+) \(0x", ldd)]:
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"))
        tar.add("/bin/dash", arcname="bin/sh")
        etc = tarfile.TarInfo("etc")
        etc.type, etc.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(etc)
        for name, text in (("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", b"root:x:0:\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text), 0o644
            tar.addfile(info, io.BytesIO(text))
    tag = f"test_session_images-small/base:{uuid.uuid4().hex[:12]}"
    subprocess.run(["docker", "import", "-", tag], input=buf.getvalue(), capture_output=True, timeout=120, check=True)
    return tag


def _session(tmp_path: Path, mode: str, base: str) -> tuple[int, dict, str]:
    """Run one child session in `mode`; its exit code, the images it made, its output."""
    work = tmp_path / mode
    work.mkdir()
    (work / "test_child.py").write_text(CHILD)
    out = work / "names.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "FLYTE_BUILD_TEST_STRICT"))}
    env.update(PYTHONPATH=str(REPO), SESSION_IMAGES_MODE=mode, SESSION_IMAGES_OUT=str(out), SESSION_IMAGES_BASE=base)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.support.session_images",
                           "--rootdir", str(work), str(work)], cwd=work, env=env, capture_output=True, text=True, timeout=500)
    return proc.returncode, json.loads(out.read_text()) if out.exists() else {}, proc.stdout + proc.stderr


def test_a_session_removes_the_images_it_made_and_only_those(tmp_path) -> None:
    ensure_base_image()
    small = _small_base(tmp_path)
    running = "(not made)"
    try:
        running = session_image(small, "test_session_images-running")  # this session's: still running throughout
        rc, made, log = _session(tmp_path, "made", small)
        assert rc == 0, log
        assert set(made) == {"base", "built", "owned"}, log
        assert [n for n in made.values() if image_present(n)] == [], log
        # the owned tag named the shared base: only the tag went
        assert image_present(BASE_IMAGE) and image_present(small) and image_present(running)

        rc, killed, log = _session(tmp_path, "killed", small)
        assert rc == -9 and set(killed) == {"base"}, log
        assert image_present(killed["base"])  # no session end ran

        rc, later, log = _session(tmp_path, "later", small)
        assert rc == 0 and later == {}, log
        assert not image_present(killed["base"]), log  # its owner is gone
        assert image_present(running) and image_present(small) and image_present(BASE_IMAGE)
    finally:
        subprocess.run(["docker", "image", "rm", "--force", running, small], capture_output=True, timeout=120)
