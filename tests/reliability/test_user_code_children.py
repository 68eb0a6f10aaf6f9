"""Children that run user code (issue 24, holes 4, 5 and 8's child-process items).

A module is user code, and a pull request may add one: it must not get the
cache signing key (hole 4); task serialization has the same deadline as
discovery and names the module; a signal to flyte-build ends flyte-build and
its own children only, never the caller's shell or a bystander in its group
(hole 5); a module that escapes with `setsid` is ended with its child; a module
raising KeyboardInterrupt or replacing `builtins.open` is no traceback; an
infinite or nan deadline is bad input (hole 8).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flyte_build.processes.children import SECRET_VARS
from flyte_build.stores import signing
from tests.support.cli import REPO, environ, flyte_build
from tests.support.processes import alive, wait_gone
from tests.support.repos import Cli, env_module, make_repo

pytestmark = pytest.mark.reliability("children that run user code")

PRIVATE, PUBLIC = signing.keygen()

# blocks (or escapes) only in the serialization child: discovery must get through
IN_SERIALIZER = "sys.argv[0].endswith('serialize_child.py')"
SLOW_IN_SERIALIZER = """\
import os, sys, time
import flyte
env = flyte.TaskEnvironment(name="slow")


@env.task
async def t(x: int) -> int:
    return x


if {cond}:
    open(os.environ["PIDFILE"], "w").write(str(os.getpid()))
    if os.fork() == 0:  # a grandchild in a session of its own, as a daemon does
        os.setsid()
        if os.fork() == 0:
            open(os.environ["ESCAPED"], "w").write(str(os.getpid()))
            time.sleep(600)
        os._exit(0)
    time.sleep(600)
""".format(cond=IN_SERIALIZER)


def _wait_for(path: Path, proc: subprocess.Popen | None = None, seconds: float = 120) -> int:
    end = time.time() + seconds
    while not (path.exists() and path.read_text()):
        assert time.time() < end and (proc is None or proc.poll() is None), f"{path.name} never written"
        time.sleep(0.1)
    return int(path.read_text())


def _kill(*pids: int) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def slow_repo(tmp_path):
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/slow.py": SLOW_IN_SERIALIZER})
    files = {n: tmp_path / n for n in ("pid", "escaped", "fb", "bystander")}
    return root, files


def test_serialization_has_the_deadline_names_the_module_and_leaves_nothing(slow_repo, tmp_path):
    root, f = slow_repo
    cli = Cli(root, tmp_path / "cache", env={"PIDFILE": str(f["pid"]), "ESCAPED": str(f["escaped"])})
    run = cli.run("--discovery-timeout", "20", "build", "specs:slow", timeout=200)
    try:
        run.assert_clean_error(2, "task serialization timed out after 20 s", "pkg.slow", "pkg/slow.py", "--discovery-timeout")
        assert wait_gone(int(f["pid"].read_text())), "the serialization child outlived its deadline"
        assert wait_gone(int(f["escaped"].read_text())), "a setsid grandchild outlived the child's deadline"
    finally:
        _kill(*(int(p.read_text()) for p in (f["pid"], f["escaped"]) if p.exists() and p.read_text()))


@pytest.mark.timeout(300)
def test_sigterm_ends_flyte_build_and_its_children_not_the_callers_group(slow_repo, tmp_path):
    """A CI step's shell runs flyte-build beside a bystander (one process group);
    SIGTERM to flyte-build alone: the shell and the bystander live on."""
    root, f = slow_repo
    env = environ(tmp_path / "cache", {"PIDFILE": str(f["pid"]), "ESCAPED": str(f["escaped"])})
    script = (f'sleep 600 & echo $! > {f["bystander"]}\n'
              f'"{sys.executable}" -m flyte_build build specs:slow & echo $! > {f["fb"]}\n'
              'wait $!; echo "flyte-build ended: $?"; wait\n')
    shell = subprocess.Popen(["sh", "-c", script], cwd=root, env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids = []
    try:
        child = _wait_for(f["pid"], shell)
        escaped = _wait_for(f["escaped"], shell, 30)
        fb, bystander = int(f["fb"].read_text()), int(f["bystander"].read_text())
        pids = [child, escaped, bystander]
        assert os.getpgid(bystander) == os.getpgid(fb) == shell.pid  # one group: the shell's
        os.kill(fb, signal.SIGTERM)
        assert wait_gone(fb), "flyte-build did not end on SIGTERM"
        assert wait_gone(child), "the serialization child outlived flyte-build"
        assert wait_gone(escaped), "a setsid grandchild outlived flyte-build"
        time.sleep(1)
        assert shell.poll() is None and alive(bystander), "SIGTERM to flyte-build killed its caller's group"
        os.kill(bystander, signal.SIGTERM)
        out, _ = shell.communicate(timeout=30)
        assert shell.returncode == 0 and "flyte-build ended: 143" in out, out
    finally:
        _kill(*pids)
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.communicate()


@pytest.mark.parametrize("body,expect", [
    ("raise KeyboardInterrupt('stop')", "importing module pkg.bad failed (at pkg/bad.py:3): KeyboardInterrupt: stop"),
    ("import builtins\nbuiltins.open = None", None),
], ids=["KeyboardInterrupt", "builtins.open"])
def test_a_module_breaking_the_child_at_import_is_no_traceback(tmp_path, body, expect):
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/bad.py": "import flyte\nenv = flyte.TaskEnvironment(name='bad')\n" + body + "\n"})
    run = Cli(root, tmp_path / "cache").run("build", "bundle:*", "specs:*", "--json")
    if expect:
        run.assert_clean_error(2, expect)
    else:  # the builtins are put back after the imports: the build goes on as usual
        run.assert_ok()
        assert {t["target"] for t in run.json()["targets"]} >= {"bundle:bad", "specs:bad"}


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-5"])
def test_a_deadline_that_is_none_is_bad_input(tmp_path, value):
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": env_module("a")},
                     pyproject_extra=f"discovery-timeout = {value}\n")
    Cli(root, tmp_path / "cache").run("build").assert_clean_error(2, "discovery-timeout", "positive, finite")


THIEF = """\
import json, os, sys
import flyte

loot = {}
for name in %(names)r:
    if os.environ.get(name):
        loot["env " + name] = os.environ[name]
# flyte-build's own environ (/proc/<ppid>/environ) is closed to its user's other
# processes (test_flyte_builds_own_environment_is_not_readable), but not to root
for where in ["/proc/self/environ"] + (["/proc/%%d/environ" %% os.getppid()] if os.geteuid() else []):
    try:
        with open(where, "rb") as f:
            for item in f.read().split(b"\\0"):
                if item.startswith(b"FLYTE_BUILD_CACHE_SIGNING"):
                    loot[where] = item.decode()
    except OSError as exc:
        loot.setdefault("refused", []).append(where)
path = loot.get("env FLYTE_BUILD_CACHE_SIGNING_KEY_FILE")
if path:
    loot["file"] = open(path).read()
with open(os.environ["LOOT"], "a") as f:
    f.write(json.dumps({"argv0": sys.argv[0], **loot}) + "\\n")
env = flyte.TaskEnvironment(name="thief")


@env.task
async def t(x: int) -> int:
    return x
""" % {"names": sorted(SECRET_VARS)}


@pytest.mark.parametrize("how", ["variable", "file"])
def test_a_module_added_by_a_pull_request_cannot_steal_the_signing_key(tmp_path, how):
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": env_module("a"), "pkg/thief.py": THIEF})
    key_file = tmp_path / "signing.key"
    key_file.write_text(PRIVATE)
    secret = {signing.SIGNING_KEY_ENV: PRIVATE} if how == "variable" else {signing.SIGNING_KEY_FILE_ENV: str(key_file)}
    loot = tmp_path / "loot.jsonl"
    store = tmp_path / "store"
    ci = Cli(root, tmp_path / "ci", env={"CI": "true", "LOOT": str(loot), "AZURE_STORAGE_SAS_TOKEN": "sas", **secret})
    ci.build("bundle:*", "specs:*", "--cache", f"file://{store}").assert_ok()
    seen = [json.loads(line) for line in loot.read_text().splitlines()]
    # discovery and task serialization both imported the thief, and got nothing
    assert any("discover" in s["argv0"] for s in seen) and any("serialize_child" in s["argv0"] for s in seen), seen
    assert PRIVATE not in loot.read_text() and "sas" not in loot.read_text(), seen
    assert all(set(s) <= {"argv0", "refused"} for s in seen), seen
    # what was published is signed by the key the thief never saw: a reader holding the verify key takes it
    reader = Cli(root, tmp_path / "reader", env={"CI": "", signing.VERIFY_KEYS_ENV: PUBLIC, "LOOT": str(loot)})
    got = reader.build("--cache", f"file://{store}", "--cache-read-only")
    got.assert_ok()
    assert {t["source"] for t in got.json()["targets"] if t["target"].startswith("bundle:")} == {"shared"}


def test_the_secret_variables_are_the_ones_flyte_build_reads():
    assert {signing.SIGNING_KEY_ENV, signing.SIGNING_KEY_FILE_ENV} <= SECRET_VARS


PEEK = """\
import os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from flyte_build.processes import children
children.hide_environ()
peek = subprocess.run(["cat", "/proc/%d/environ" % os.getpid()], capture_output=True)
print("read" if b"FLYTE_BUILD_CACHE_SIGNING_KEY" in peek.stdout else "refused")
"""


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="no /proc (not Linux)")
def test_flyte_builds_own_environment_is_not_readable_by_its_users_other_processes():
    """With a secret in its environment flyte-build is non-dumpable: a process of
    the same (non-root) user, a child running a module, cannot read its environ."""
    import shutil
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="flyte-build-peek-"))  # pytest's are private to root
    try:
        _peek(tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _peek(tmp_path: Path) -> None:
    lib = tmp_path / "lib" / "flyte_build"
    lib.mkdir(parents=True)
    (lib / "processes").mkdir()
    for name in ("__init__.py", "processes/__init__.py"):
        (lib / name).write_text("")
    for name in ("processes/children.py", "reach.py"):  # children and the one module it imports
        (lib / name).write_bytes((REPO / "flyte_build" / name).read_bytes())
    (tmp_path / "peek.py").write_text(PEEK)
    for p in (tmp_path, lib.parent, lib, *lib.rglob("*"), tmp_path / "peek.py"):
        p.chmod(0o755)
    run_as = ["setpriv", "--reuid=54321", "--regid=54321", "--clear-groups"] if os.geteuid() == 0 else []
    python = "/usr/bin/python3" if run_as else sys.executable
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), signing.SIGNING_KEY_ENV: PRIVATE}
    out = subprocess.run([*run_as, python, str(tmp_path / "peek.py"), str(lib.parent)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "refused", (out.stdout, out.stderr)


# a repository's own `flyte_build` package: says so in a file when imported
USERS_FLYTE_BUILD = """\
import os
open(os.environ["MARKER"], "a").write(__file__ + "\\n")
"""


@pytest.mark.parametrize("imports_it", [False, True])
def test_a_flyte_build_package_in_the_repository_is_the_users_not_ours(tmp_path, imports_it):
    """The children start in the root; a `flyte_build/` there never stands in for
    flyte-build's own code. A module importing `flyte_build` gets the repository's,
    as under `flyte deploy` (the root is on sys.path; ours is not)."""
    b_body = "import flyte_build\nFROM = flyte_build.__file__\n" if imports_it else ""
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": env_module("a"),
                                         "pkg/b.py": env_module("b", imports=b_body),
                                         "flyte_build/__init__.py": USERS_FLYTE_BUILD})
    marker = tmp_path / "marker"
    # in this process, as the `flyte-build` command runs (`python -m flyte_build` in the
    # root would import theirs: Python puts the working directory first for it)
    run = flyte_build("build", "--json", "bundle:a", "specs:a", "specs:b", cwd=root, cache=tmp_path / "cache",
                      env={"MARKER": str(marker)}, in_process=True)
    run.assert_ok()
    assert {t["target"] for t in run.json()["targets"]} >= {"bundle:a", "specs:a", "specs:b"}
    if imports_it:  # their code, in both children (discovery, then serialization of `b`)
        assert marker.read_text().splitlines() == [str(root / "flyte_build" / "__init__.py")] * 2
    else:
        assert not marker.exists(), marker.read_text()
