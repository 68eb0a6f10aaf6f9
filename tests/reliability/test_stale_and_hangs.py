"""No stale results, no hanging discovery (issue 15, High 4 and Medium 5).

Discovery and serialization were keyed on module digests only: a data file
read at import or an environment variable changed the environments while
`deploy --dry-run` kept the old image, resources and version. The executable
bit was not in the action key. A module that blocks at import hung the build,
and the discovery child outlived a killed parent.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.support.processes import alive, wait_gone
from tests.support.repos import Cli, make_repo

pytestmark = pytest.mark.reliability("stale results and hangs")

SETTINGS_MODULE = """\
import json, os
import flyte

with open(os.path.join(os.path.dirname(__file__), "..", "settings.json")) as f:
    S = json.load(f)
STAGE = os.environ.get("STAGE", "dev")
env = flyte.TaskEnvironment(name="a", image=S["image"], resources=flyte.Resources(memory=S["memory"]),
                            env_vars={"STAGE": STAGE})


@env.task
async def t(x: int) -> int:
    return x
"""


def _plan(cli: Cli, **env) -> dict:
    run = Cli(cli.cwd, cli.cache_dir, env={**cli.env, **env}).run("deploy", "--dry-run", "--json")
    run.assert_ok()
    t = run.json()["targets"][0]
    container = t["tasks"][0]["spec"]["task_template"]["container"]
    return {
        "version": t["version"], "image": t["image"],
        "memory": json.dumps(container.get("resources")),
        "stage": [e["value"] for e in container.get("env", []) if e.get("key") == "STAGE"],
    }


def test_data_files_and_variables_read_at_import_key_discovery_and_specs(tmp_path):
    root = make_repo(tmp_path / "repo", {
        "pkg/__init__.py": "", "pkg/a.py": SETTINGS_MODULE,
        "settings.json": json.dumps({"image": "python:3.11", "memory": "1Gi"}),
    })
    cli = Cli(root, tmp_path / "cache")
    first = _plan(cli)
    assert first["image"] == "python:3.11" and "1Gi" in first["memory"] and first["stage"] == ["dev"]
    assert _plan(cli) == first  # a no-op stays a no-op
    (root / "settings.json").write_text(json.dumps({"image": "python:3.12", "memory": "4Gi"}))
    second = _plan(cli)
    assert second["image"] == "python:3.12" and "4Gi" in second["memory"]
    assert second["version"] != first["version"]
    prod = _plan(cli, STAGE="prod")
    assert prod["stage"] == ["prod"] and prod["version"] != second["version"]
    assert _plan(cli) == second  # back to dev: the earlier result again


def test_a_flyte_config_appearing_is_a_change(tmp_path):
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": SETTINGS_MODULE,
                                         "settings.json": json.dumps({"image": "python:3.11", "memory": "1Gi"})})
    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(root, tmp_path / "cache", env={"HOME": str(home)})
    cli.build().assert_ok()
    again = cli.build()
    again.assert_ok()
    assert again.json()["discovery"]["how"] in ("cached", "snapshot")
    (home / ".flyte").mkdir()
    (home / ".flyte" / "config.yaml").write_text("admin:\n  endpoint: dns:///example.invalid\n")
    third = cli.build()
    third.assert_ok()
    assert third.json()["discovery"]["how"] not in ("cached", "snapshot")


def test_the_executable_bit_is_in_the_action_key(tmp_path):
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": SETTINGS_MODULE,
                                         "settings.json": json.dumps({"image": "python:3.11", "memory": "1Gi"})})
    cli = Cli(root, tmp_path / "cache")
    first = cli.build()
    first.assert_ok()
    (root / "pkg" / "a.py").chmod(0o755)
    second = cli.build()
    second.assert_ok()
    rec = next(t for t in second.json()["targets"] if t["target"] == "bundle:a")
    assert rec["status"] == "built" and rec["digest"] != first.digests()["bundle:a"]
    import tarfile

    with tarfile.open(rec["path"]) as tar:
        assert tar.getmember("pkg/a.py").mode == 0o755


SLOW = """\
import os, time
import flyte
open(os.environ["PIDFILE"], "w").write(str(os.getpid()))
{block}
env = flyte.TaskEnvironment(name="slow")
"""


@pytest.mark.parametrize("block", ["time.sleep(600)", "open(os.environ['FIFO']).read()"], ids=["sleep", "fifo"])
def test_discovery_timeout_names_the_module_and_kills_the_child(tmp_path, block):
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/fine.py": "x = 1\n", "pkg/slow.py": SLOW.format(block=block)})
    pidfile, fifo = tmp_path / "pid", tmp_path / "fifo"
    os.mkfifo(fifo)
    cli = Cli(root, tmp_path / "cache", env={"PIDFILE": str(pidfile), "FIFO": str(fifo)})
    started = time.time()
    # the deadline covers the child's start (importing flyte: 1-2 s on CI, more on a busy
    # machine) before it reaches pkg.slow; every second above that is waited out by the suite
    run = cli.run("--discovery-timeout", "6", "build")
    run.assert_clean_error(2, "discovery timed out after 6 s", "pkg.slow", "pkg/slow.py", "--discovery-timeout")
    assert time.time() - started < 60
    assert wait_gone(int(pidfile.read_text()))
    if "sleep" in block:  # the config key, and a bad value of it
        (root / "pyproject.toml").write_text((root / "pyproject.toml").read_text() + "discovery-timeout = 5.5\n")
        cli.run("build").assert_clean_error(2, "discovery timed out after 5.5 s", "pkg.slow")
        (root / "pyproject.toml").write_text((root / "pyproject.toml").read_text().replace("discovery-timeout = 5.5\n", "discovery-timeout = -1\n"))
        cli.run("build").assert_clean_error(2, "discovery-timeout")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_the_discovery_child_dies_with_its_parent(tmp_path, sig):
    root = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/slow.py": SLOW.format(block="time.sleep(600)")})
    pidfile = tmp_path / "pid"
    cli = Cli(root, tmp_path / "cache", env={"PIDFILE": str(pidfile)})
    proc = cli.popen("build")
    try:
        end = time.time() + 120
        while not pidfile.exists() or not pidfile.read_text():
            assert time.time() < end and proc.poll() is None, "discovery never started"
            time.sleep(0.1)
        child = int(pidfile.read_text())
        proc.send_signal(sig)
        proc.communicate(timeout=30)
        assert wait_gone(child), f"the discovery child outlived its parent ({sig.name})"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if pidfile.exists() and pidfile.read_text() and alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
