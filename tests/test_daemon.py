"""The resident process (flyte_build/daemon): real daemons behind real Unix
sockets, started by real `flyte-build` processes on a small repository.

Every test that starts a daemon stops it at the end (the `daemon` fixture)."""

from __future__ import annotations

import json
import re
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flyte_build.daemon import peer
from tests.support.cli import flyte_build, popen
from tests.support.processes import alive, wait_gone

pytestmark = pytest.mark.timeout(180)

# an environment's name read from the environment at import: a command's own
# variables must reach discovery, and never the next command
APP = """\
import os

import flyte

env = flyte.TaskEnvironment(name=os.environ.get("FB_DAEMON_ENV_NAME", "plain"))


@env.task
async def hello(x: int) -> int:
    return x + 1
"""
PYPROJECT = '[project]\nname = "resident-demo"\nversion = "0.1.0"\n'
NO_CI = {"CI": None, "FLYTE_BUILD_DAEMON": None}  # the suite turns it off (conftest): its default here


class Daemonised:
    """A repository and a private cache, with `run` for commands outside CI."""

    def __init__(self, root: Path):
        self.repo, self.cache = root / "repo", root / "cache"
        self.repo.mkdir(parents=True)
        (self.repo / "pyproject.toml").write_text(PYPROJECT)
        (self.repo / "app.py").write_text(APP)

    def run(self, *args: str, env: dict | None = None, **kw):
        return flyte_build(*args, cwd=self.repo, cache=self.cache, env={**NO_CI, **(env or {})}, **kw)

    def status(self) -> dict:
        return self.run("daemon", "status", "--json").assert_ok().json()

    def stop(self) -> None:
        self.run("daemon", "stop")


@pytest.fixture
def daemon(tmp_path):
    # a short directory: a socket's path must stay under Linux's 108 bytes
    d = Daemonised(tmp_path / "d")
    yield d
    d.stop()


@pytest.mark.slow
def test_a_second_command_is_served_by_the_daemon_with_the_bytes_of_a_run_without_it(daemon):
    first = daemon.run("build", "--json").assert_ok()
    up = daemon.status()
    assert up["running"] is True and up["served"] == 1, up
    for served, args in enumerate((("targets", "--json"), ("graph", "--format", "json")), start=2):
        resident = daemon.run(*args).assert_ok()
        now = daemon.status()
        # the same resident process answered, one command more
        assert now["pid"] == up["pid"] and now["served"] == served, now
        assert resident.out == daemon.run("--no-daemon", *args).assert_ok().out
    assert daemon.status()["served"] == 3  # --no-daemon ran in its own process
    # a no-op build: answered by the daemon or, once recorded, by the snapshot in the client
    second = daemon.run("build", "--json").assert_ok()
    alone = daemon.run("--no-daemon", "build", "--json").assert_ok()
    assert first.digests() == second.digests() == alone.digests()
    assert _timeless(second.json()) == _timeless(alone.json())
    assert second.json()["cache"] == alone.json()["cache"]


def _timeless(doc: dict) -> dict:
    return [{k: v for k, v in t.items() if k != "seconds"} for t in doc["targets"]]


@pytest.mark.slow
def test_each_command_gets_its_own_environment_and_the_daemon_keeps_none(daemon):
    named = daemon.run("targets", "--json", env={"FB_DAEMON_ENV_NAME": "secret-name-4711"}).assert_ok()
    plain = daemon.run("targets", "--json").assert_ok()
    assert [e["env"] for e in named.json()["envs"]] == ["secret-name-4711"]
    assert [e["env"] for e in plain.json()["envs"]] == ["plain"]
    alone = daemon.run("--no-daemon", "targets", "--json", env={"FB_DAEMON_ENV_NAME": "secret-name-4711"})
    assert alone.assert_ok().out == named.out
    pid = daemon.status()["pid"]
    # neither the daemon's own environment nor its log holds a command's variable
    assert b"secret-name-4711" not in Path(f"/proc/{pid}/environ").read_bytes()
    logs = list((daemon.cache / "daemon").glob("*.log"))
    assert logs and all("secret-name-4711" not in p.read_text() for p in logs)


def test_the_socket_is_owner_only(daemon):
    daemon.run("graph").assert_ok()
    path = Path(daemon.status()["socket"])
    st = path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert st.st_uid == os.getuid()


def test_the_peer_uid_check_through_a_real_socket_pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer.credentials(a) == (os.getpid(), os.getuid(), os.getgid())
        assert peer.refusal(a, os.getuid()) is None
        other = os.getuid() + 1
        assert peer.refusal(a, other) == f"uid {os.getuid()} may not use the resident process of uid {other}"
        from flyte_build.daemon.client import listener_uid

        assert listener_uid(b) == os.getuid()  # the client's own check, without the struct module


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_another_user_is_refused_even_through_an_open_socket(daemon):
    daemon.run("graph").assert_ok()
    path = Path(daemon.status()["socket"])
    # open the door the modes close, to reach the uid check behind it
    os.chmod(path.parent, 0o755)
    os.chmod(path, 0o666)
    # everything imported and the directory opened as root; then the uid drops and the
    # socket is reached through the open directory (nobody may not traverse the tmp path)
    script = (
        "import ctypes, os, socket, sys; sys.path[:0] = [sys.argv[2]]\n"
        "from flyte_build.daemon import protocol\n"
        "d = os.open(os.path.dirname(sys.argv[1]), os.O_RDONLY | os.O_DIRECTORY)\n"
        "os.setgid(65534); os.setuid(65534); ctypes.CDLL(None).prctl(4, 1)  # PR_SET_DUMPABLE: our own /proc/self/fd\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(f'/proc/self/fd/{d}/' + os.path.basename(sys.argv[1]))\n"
        "print(protocol.receive(s)[0])  # refused before it reads a request\n"
    )
    got = subprocess.run([sys.executable, "-c", script, str(path), str(Path(__file__).parents[1])],
                         capture_output=True, text=True, timeout=60)
    assert "uid 65534 may not use the resident process" in got.stdout, got.stderr
    assert "pid" not in got.stdout


@pytest.mark.slow
def test_it_exits_after_the_idle_timeout(daemon):
    daemon.run("--daemon-idle-timeout", "2", "graph").assert_ok()
    done = time.monotonic()
    log = next((daemon.cache / "daemon").glob("*.log"))
    pid = int(log.read_text().split("started pid ", 1)[1].split()[0])
    assert wait_gone(pid, 30)
    assert time.monotonic() - done >= 1.5  # not before its time (less the client's own exit)
    assert "exiting: idle for 2 s" in log.read_text()
    assert not log.with_suffix(".sock").exists()
    assert daemon.status()["running"] is False


@pytest.mark.slow
def test_killing_it_mid_command_loses_nothing_and_the_next_command_starts_another(daemon):
    daemon.run("graph").assert_ok()
    (daemon.repo / "slow.py").write_text("import time\n\ntime.sleep(4)\n")  # the next discovery takes 4 s
    first = daemon.status()
    proc = popen("build", "--json", cwd=daemon.repo, cache=daemon.cache, env=NO_CI)
    deadline = time.time() + 30
    while daemon.status().get("command") is None and time.time() < deadline:
        time.sleep(0.05)
    command = daemon.status()["command"]
    assert command, "the build never started in the daemon"
    os.kill(first["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert err.count("the resident process ended during the command; running the command in this process") == 1, err
    assert wait_gone(command, 10), "the command's fork outlived its daemon"
    assert "Traceback" not in err
    built = {t["target"]: t["digest"] for t in json.loads(out)["targets"]}
    assert list(built) == ["bundle:plain"]
    daemon.run("cache", "verify").assert_ok()
    # a stale socket is left behind; the next command replaces it and its daemon serves it
    assert Path(first["socket"]).exists()
    again = daemon.run("build", "--json").assert_ok()
    assert again.digests() == built and all(t["cached"] for t in again.json()["targets"])
    now = daemon.status()
    # the fresh daemon served `cache verify` (and this build, unless its snapshot answered it)
    assert now["running"] is True and now["pid"] != first["pid"] and now["served"] >= 1


def test_in_ci_it_is_off_unless_the_config_turns_it_on(daemon):
    daemon.run("graph", env={"CI": "true"}).assert_ok()
    assert daemon.status()["running"] is False
    daemon.run("--no-daemon", "graph").assert_ok()
    daemon.run("graph", env={"FLYTE_BUILD_DAEMON": "0"}).assert_ok()
    assert daemon.status()["running"] is False
    daemon.run("graph", env={"CI": "true", "FLYTE_BUILD_DAEMON": "1"}).assert_ok()
    assert daemon.status()["running"] is True
    daemon.stop()
    (daemon.repo / "pyproject.toml").write_text(PYPROJECT + "\n[tool.flyte-build]\ndaemon = true\n")
    daemon.run("graph", env={"CI": "true"}).assert_ok()
    assert daemon.status()["running"] is True
    daemon.stop()
    (daemon.repo / "pyproject.toml").write_text(PYPROJECT + "\n[tool.flyte-build]\ndaemon = false\n")
    daemon.run("graph").assert_ok()
    assert daemon.status()["running"] is False
    shown = daemon.run("config", "--json").assert_ok().json()["flyte_build"]
    assert shown["daemon"]["value"] is False and "tool.flyte-build.daemon" in shown["daemon"]["source"], shown["daemon"]
    assert shown["daemon-idle-timeout"] == {"value": 900.0, "source": "default"}
    (daemon.repo / "pyproject.toml").write_text(PYPROJECT + "\n[tool.flyte-build]\ndaemon = \"no\"\n")
    daemon.run("graph").assert_clean_error(2, "tool.flyte-build.daemon", "must be a boolean")


@pytest.mark.slow
def test_two_clients_racing_end_with_one_daemon(daemon):
    procs = [popen("targets", "--json", cwd=daemon.repo, cache=daemon.cache, env=NO_CI) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert len({o for o, _ in outs}) == 1
    sock = daemon.status()["socket"]
    # the daemons that lost the race give way once the lock has stayed taken for 2 s
    deadline = time.time() + 15
    while True:
        servers = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, sock)]
        if len(servers) == 1 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert len(servers) == 1, servers
    assert daemon.status()["served"] == 3


def _cmdline_has(pid: str, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes() and alive(int(pid))
    except OSError:
        return False


def test_a_changed_project_interpreter_starts_a_fresh_daemon(daemon):
    venv_bin = daemon.repo / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    python = venv_bin / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    daemon.run("graph").assert_ok()
    first = daemon.status()["pid"]
    python.write_text(f"#!/bin/sh\n# upgraded\nexec {sys.executable} \"$@\"\n")
    daemon.run("graph").assert_ok()
    assert wait_gone(first, 10)
    now = daemon.status()
    assert now["pid"] != first and now["served"] == 1
    assert "changed" in next((daemon.cache / "daemon").glob("*.log")).read_text()


def test_a_daemon_that_cannot_start_costs_one_message_not_a_wait(daemon):
    from flyte_build.daemon import address

    # a directory where its socket would go: binding fails
    path = Path(address.socket_path(str(daemon.cache), str(daemon.repo)))
    path.mkdir(parents=True)
    start = time.monotonic()
    run = daemon.run("graph", "--format", "json").assert_ok()
    assert time.monotonic() - start < 20
    assert run.err.count("could not start the resident process; running the command in this process") == 1, run.err
    assert json.loads(run.out)["targets"]
    assert "could not start: IsADirectoryError" in path.with_suffix(".log").read_text()


@pytest.mark.slow
def test_the_command_sees_the_clients_terminal(daemon):
    import fcntl
    import pty
    import struct
    import termios

    def on_a_terminal(*args: str) -> bytes:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 52, 0, 0))
        env = {**os.environ, **{"FLYTE_BUILD_CACHE_DIR": str(daemon.cache), "TERM": "xterm-256color"}}
        for k in ("CI", "FLYTE_BUILD_DAEMON", "COLUMNS", "NO_COLOR"):
            env.pop(k, None)
        proc = subprocess.Popen([sys.executable, "-m", "flyte_build", *args], cwd=daemon.repo, env=env,
                                stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.DEVNULL)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=120) == 0
        os.close(master)
        return out

    daemon.run("targets").assert_ok()  # the daemon is up and discovery cached
    served = daemon.status()["served"]
    resident = on_a_terminal("targets")
    assert daemon.status()["served"] == served + 1
    alone = on_a_terminal("--no-daemon", "targets")
    assert b"\x1b[" in resident  # colour: stdout is a terminal
    widths = {len(line) for line in re.sub(rb"\x1b\[[0-9;]*m", b"", resident).decode().splitlines() if line.strip()}
    assert 40 < max(widths) <= 52, widths  # the table fits the terminal's 52 columns (77 wide on a wider one)
    assert resident == alone


def test_the_thin_client_imports_almost_nothing(daemon):
    daemon.run("build").assert_ok()
    run = daemon.run("build", python_flags=("-X", "importtime")).assert_ok()
    imported = {line.rsplit("|", 1)[1].strip() for line in run.err.splitlines() if line.startswith("import time:")}
    ours = {m for m in imported if m.startswith("flyte_build")}
    assert ours == {"flyte_build", "flyte_build.__about__", "flyte_build.cli", "flyte_build.daemon",
                    "flyte_build.daemon.client", "flyte_build.daemon.address", "flyte_build.daemon.protocol",
                    "flyte_build.stores", "flyte_build.stores.cache_dir", "flyte_build.stores.snapshot"}, ours
    # the command itself ran in the daemon: none of its machinery was imported here
    heavy = {"json", "socket", "signal", "argparse", "rich", "rich.console", "hashlib", "tomllib"}
    assert not imported & heavy, imported & heavy
    assert daemon.status()["served"] == 2


@pytest.mark.slow
def test_an_edit_is_discovered_by_the_warm_child_the_daemon_holds(daemon):
    daemon.run("build").assert_ok()  # the daemon, and the warm child its first discovery started
    handle = next((daemon.cache / "daemon").glob("*.warm.json"))
    warm_pid = json.loads(handle.read_text())["pid"]
    app = daemon.repo / "app.py"
    app.write_text(app.read_text().replace("x + 1", "x + 2"))
    doc = daemon.run("build", "--json").assert_ok().json()
    assert doc["discovery"]["how"] == "warm", doc["discovery"]
    cold = daemon.run("--no-daemon", "build", "--json", env={"FLYTE_BUILD_CACHE_DIR": str(daemon.cache.parent / "cold")})
    assert [t["key"] for t in doc["targets"]] == [t["key"] for t in cold.assert_ok().json()["targets"]]
    assert json.loads(handle.read_text())["pid"] == warm_pid  # the same warm child, kept between commands
    assert daemon.status()["warm_child"] == warm_pid
    assert f"warm discovery child: pid {warm_pid}" in daemon.run("daemon", "status").assert_ok().out
    daemon.stop()
    assert wait_gone(warm_pid, 15) and not handle.exists()


@pytest.mark.slow
def test_affected_through_the_daemon_keeps_the_warm_child_of_the_working_tree(daemon):
    """`affected` discovers the revision it compares with in a tree of its own:
    not with the resident process's warm child, which holds the working tree's
    modules and serves the next edit."""
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "one"]):
        subprocess.run([*git, *args], cwd=daemon.repo, check=True, capture_output=True)
    daemon.run("build").assert_ok()
    handle = next((daemon.cache / "daemon").glob("*.warm.json"))
    warm_pid = json.loads(handle.read_text())["pid"]
    app = daemon.repo / "app.py"
    app.write_text(app.read_text().replace("x + 1", "x + 2"))
    subprocess.run([*git, "commit", "-qam", "two"], cwd=daemon.repo, check=True, capture_output=True)
    daemon.run("affected", "--since", "HEAD~1", "--json").assert_ok()
    assert json.loads(handle.read_text())["pid"] == warm_pid
    app.write_text(app.read_text().replace("x + 2", "x + 3"))
    doc = daemon.run("build", "--json").assert_ok().json()
    assert doc["discovery"]["how"] == "warm", doc["discovery"]
    assert daemon.status()["warm_child"] == warm_pid


@pytest.mark.slow
def test_a_killed_daemon_leaves_no_warm_child_nor_its_directory(daemon):
    """The warm child outlives the command that started it, with a private
    directory of its own; when its resident process is killed outright, the
    child ends and removes that directory (nothing else would)."""
    daemon.run("build").assert_ok()
    handle = json.loads(next((daemon.cache / "daemon").glob("*.warm.json")).read_text())
    tmp = Path(handle["tmp"])
    assert tmp.is_dir() and alive(handle["pid"])
    os.kill(daemon.status()["pid"], signal.SIGKILL)
    assert wait_gone(handle["pid"], 15)
    deadline = time.monotonic() + 5
    while tmp.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not tmp.exists()


@pytest.mark.slow
def test_a_command_the_cache_answers_starts_the_warm_child_for_the_next_edit(daemon):
    """The first command of a resident process whose discovery comes from the
    cache runs no child; the warm child then starts in the background, so the
    first edit is already served by a fork of it, with a build's own keys."""
    daemon.run("--no-daemon", "build").assert_ok()
    (daemon.repo / "app.py").write_text(APP + "\n# a comment: discovery's cache still answers\n")
    doc = daemon.run("build", "--json").assert_ok().json()  # starts the resident process
    assert doc["discovery"]["how"] == "cutoff", doc["discovery"]
    deadline = time.monotonic() + 90
    while daemon.status().get("warm_child") is None and time.monotonic() < deadline:
        time.sleep(0.2)
    warm_pid = daemon.status()["warm_child"]
    assert warm_pid, "no warm child started after a command the cache answered"
    app = daemon.repo / "app.py"
    app.write_text(app.read_text().replace("x + 1", "x + 3"))
    doc = daemon.run("build", "--json").assert_ok().json()
    assert doc["discovery"]["how"] == "warm", doc["discovery"]
    cold = daemon.run("--no-daemon", "build", "--json", env={"FLYTE_BUILD_CACHE_DIR": str(daemon.cache.parent / "cold")})
    assert [t["key"] for t in doc["targets"]] == [t["key"] for t in cold.assert_ok().json()["targets"]]
    assert daemon.status()["warm_child"] == warm_pid  # one warm child: the command did not start a second
    daemon.stop()
    assert wait_gone(warm_pid, 15)


@pytest.mark.slow
def test_ctrl_c_reaches_the_command_and_a_second_command_waits_its_turn(daemon):
    daemon.run("graph").assert_ok()
    up = daemon.status()
    (daemon.repo / "slow.py").write_text("import time\n\ntime.sleep(6)\n")  # the next discovery takes 6 s
    slow = popen("build", cwd=daemon.repo, cache=daemon.cache, env=NO_CI)
    deadline = time.time() + 30
    while daemon.status().get("command") is None and time.time() < deadline:
        time.sleep(0.05)
    queued = popen("targets", "--json", cwd=daemon.repo, cache=daemon.cache, env=NO_CI)
    time.sleep(2)  # past the second after which a waiting client says so
    slow.send_signal(signal.SIGINT)
    _, err = slow.communicate(timeout=60)
    assert slow.returncode == 130 and "flyte-build: interrupted" in err and "Traceback" not in err, err
    out, err = queued.communicate(timeout=120)
    assert queued.returncode == 0, err
    assert err.count("waiting for another command in the resident process to finish") == 1, err
    assert [e["env"] for e in json.loads(out)["envs"]] == ["plain"]
    now = daemon.status()
    assert now["pid"] == up["pid"] and now["served"] == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to listen as another user")
def test_the_client_sends_nothing_to_a_socket_another_user_listens_on(daemon):
    from flyte_build.daemon import address

    path = Path(address.socket_path(str(daemon.cache), str(daemon.repo)))
    path.parent.mkdir(parents=True)
    path.parent.chmod(0o777)  # a cache directory others may write in
    # uid 65534 listens where this repository's daemon would, and reports what it is sent
    script = (
        "import ctypes, os, socket, sys\n"
        "d = os.open(os.path.dirname(sys.argv[1]), os.O_RDONLY | os.O_DIRECTORY)\n"
        "os.setgid(65534); os.setuid(65534); ctypes.CDLL(None).prctl(4, 1)\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(f'/proc/self/fd/{d}/' + os.path.basename(sys.argv[1])); s.listen(8)\n"
        "print('listening', flush=True); s.settimeout(60)\n"
        "c, _ = s.accept(); c.settimeout(5)\n"
        "try:\n    got = c.recv(65536)\nexcept OSError:\n    got = b''\n"
        "print('got', len(got), flush=True)\n"
    )
    spy = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert spy.stdout.readline().strip() == "listening"
        run = daemon.run("graph", "--format", "json", env={"FB_SECRET_FOR_SPY": "s3cr3t"}).assert_ok()
        assert json.loads(run.out)["targets"]
        assert spy.stdout.readline().strip() == "got 0"  # it connected, saw another uid, and hung up
    finally:
        spy.kill()
        spy.wait()
    # its own daemon took the place over, in a directory that is owner-only again
    status = daemon.status()
    assert status["running"] is True and status["served"] == 1
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
