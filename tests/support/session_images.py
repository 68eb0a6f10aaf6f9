"""The Docker images a test session makes, removed when the session ends.

On dockerd's vfs storage driver every layer is a full copy of the file system
below it, so the images a session leaves behind (its per-session base images,
everything built FROM them, layer images with session-unique tags) cost
gigabytes each run; two sessions' leftovers once filled a 100 GB disk.

Whose image is whose: `docker_env.session_image` labels each per-session base
`org.flyte-build.test-session=<owner>`, the owner being the pytest process
that made it (host, boot id, pid, the process's start time). Images built FROM
such a base inherit the label, so the label names exactly the images a session
made on its bases. Images a test tags itself on a shared base (no label) are
registered with `own(tag)`.

At the end of a session (`pytest_sessionfinish`; each pytest-xdist worker is a
session of its own) this removes the images labelled with its owner, the tags
it owns, and the labelled images of owners that no longer run on this machine
(a session killed before its end). It never touches an image without the label
(the shared offline base `flyte-build-test/python:3.11`, the runtime image) nor
the images of an owner still running (another session, now).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess

LABEL = "org.flyte-build.test-session"

_owned: list[str] = []


def _start_time(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks after boot), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the command name (field 2) may hold spaces: count from the closing parenthesis
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@functools.lru_cache(maxsize=1)
def _host() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "unknown-boot"
    return f"{socket.gethostname()}/{boot}"


def owner(pid: int | None = None) -> str:
    """The label value naming process `pid` (this one by default) on this machine."""
    pid = os.getpid() if pid is None else pid
    return f"{_host()}/{pid}/{_start_time(pid)}"


def _alive(value: str) -> bool:
    """Whether the owner `value` names may still be running: a process on another machine
    (or one this machine cannot see) counts as running, so its images are left alone."""
    parts = value.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != _host() or not parts[2].isdigit():
        return True
    return _start_time(int(parts[2])) == parts[3]


def own(tag: str) -> str:
    """Register `tag`, an image this session made on a shared base, for removal at its end."""
    _owned.append(tag)
    return tag


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        return subprocess.run([docker, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def labelled() -> dict[str, tuple[str, str]]:
    """Every image (intermediate ones included) carrying the label: id -> (owner, created)."""
    ids = _docker("image", "ls", "--all", "--quiet", "--no-trunc", "--filter", f"label={LABEL}", timeout=30)
    if ids is None or ids.returncode != 0 or not ids.stdout.split():
        return {}
    fmt = "{{.Id}}\t{{index .Config.Labels \"" + LABEL + "\"}}\t{{.Created}}"
    out = _docker("image", "inspect", "--format", fmt, *sorted(set(ids.stdout.split())), timeout=60)
    found = {}
    for line in (out.stdout if out is not None else "").splitlines():
        image, value, created = line.split("\t")
        found[image] = (value, created)
    return found


def leftovers() -> list[str]:
    """The ids of the labelled images a session end removes: this process's and dead owners'."""
    me = owner()
    doomed = [(created, image) for image, (value, created) in labelled().items() if value == me or not _alive(value)]
    # newest first: an image built by the classic builder must go before its parent
    return [image for _, image in sorted(doomed, reverse=True)]


def cleanup() -> list[str]:
    """Remove this session's images (and dead sessions' labelled ones); returns what was asked to go."""
    gone = leftovers()
    if gone:
        # -f: one image may carry several tags (a registry name and a local one)
        _docker("image", "rm", "--force", *gone, timeout=600)
    for tag in reversed(_owned):
        # by tag, without --force: untags, and deletes the image only when no other tag names it
        _docker("image", "rm", tag, timeout=120)
    tags, _owned[:] = list(_owned), []
    return gone + tags


def pytest_sessionfinish(session, exitstatus):
    cleanup()
