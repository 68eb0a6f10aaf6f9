"""What a person sees of the command line: help, output width, one-line failures
of outside tools, CI-log progress, the JSON documents' shared fields, and the
refusal to run outside any project."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.support.cli import flyte_build
from tests.support.requirements import require

COMMANDS = ["targets", "graph", "build", "explain", "deploy", "affected", "cache", "config"]
HEAVY = ("rich", "flyte", "boto3", "botocore", "python_on_whales", "aiobotocore")


def _width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def test_bare_command_prints_the_help_and_each_command_has_examples(tmp_path):
    bare = flyte_build(cwd=tmp_path, cache=tmp_path / "cache")
    assert bare.rc == 2 and bare.err == "", bare.describe()
    assert bare.out.startswith("usage: flyte-build") and "commands:" in bare.out and "examples:" in bare.out
    assert bare.out.count("--root-dir ROOT_DIR") == 1  # the global options, listed once
    for cmd in COMMANDS:
        run = flyte_build(cmd, "--help", cwd=tmp_path, cache=tmp_path / "cache", env={"COLUMNS": "80"}, in_process=True)
        assert run.rc == 0, run.describe()
        examples = run.out.split("examples:")[1]
        assert examples.count(f"flyte-build {cmd}") >= 2, run.out
        # the global options are named once, in the top-level help, not repeated here
        assert "--root-dir ROOT_DIR" not in run.out and "--cache-dir" not in run.out, run.out
        assert "see `flyte-build --help`" in run.out
        assert _width(run.out) <= 80, run.out


def test_help_imports_neither_rich_nor_flyte_nor_boto(tmp_path):
    run = flyte_build("build", "--help", cwd=tmp_path, cache=tmp_path / "cache", python_flags=("-X", "importtime"))
    assert run.rc == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.err.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in HEAVY}, sorted(imported)
    # nor the rule modules, nor discovery and the workspace: the parser needs none of them
    assert not {m for m in imported if m.endswith((".image.rule", ".bundle.rule", "flyte_build.discovery.discover", "flyte_build.workspace"))}, sorted(imported)


def test_outside_any_project_nothing_is_imported_and_the_run_stops(tmp_path):
    stray = tmp_path / "work"
    stray.mkdir()
    (stray / "stray.py").write_text(f"open({str(stray / 'ran')!r}, 'w').close()\n")
    for args in (("build",), ("targets", "--json")):
        run = flyte_build(*args, cwd=stray, cache=tmp_path / "cache")
        run.assert_clean_error(2, f"no pyproject.toml in {stray}", "--root-dir")
        assert not (stray / "ran").exists()
    assert json.loads(run.out) == {"schema_version": 1, "ok": False, "exit_code": 2, "error": run.err.split("error: ", 1)[1].strip()}
    # naming the root explicitly still works without a pyproject.toml
    named = flyte_build("--root-dir", ".", "targets", cwd=stray, cache=tmp_path / "cache")
    assert "no pyproject.toml" not in named.err, named.describe()


def test_summary_fits_80_columns_and_counts_in_words(repo, tmp_path):
    cache = tmp_path / "cache"
    one = flyte_build("build", "bundle:inference", cwd=repo, cache=cache, env={"COLUMNS": "80"})
    one.assert_ok()
    assert "1 target: 1 built, 0 cached, 0 failed, 0 skipped" in one.out
    run = flyte_build("build", cwd=repo, cache=cache, env={"COLUMNS": "80"}).assert_ok()
    table = "\n".join(line for line in run.out.splitlines() if not line.startswith("artifacts:"))  # a path is as long as it is
    assert _width(table) <= 80, run.out
    rows = [line for line in run.out.splitlines() if "bundle:" in line]
    assert len(rows) == 6, run.out  # one line a target: nothing wrapped
    assert all(re.search(r"sha256:[0-9a-f]{10,}…", r) for r in rows), run.out  # digests cut, not wrapped
    # outside a terminal, a CI log gets a line as each target starts and ends
    assert "start bundle:reporting" in run.err and re.search(r"built bundle:reporting sha256:[0-9a-f]{64} \(\d+\.\ds\)", run.err)
    quiet = flyte_build("build", "-q", cwd=repo, cache=cache).assert_ok()
    assert "start bundle:" not in quiet.err and "6 targets: 0 built, 6 cached" in quiet.out
    for cmd in (("targets",), ("config",), ("deploy", "--dry-run")):
        shown = flyte_build(*cmd, cwd=repo, cache=cache, env={"COLUMNS": "80"}, in_process=cmd[0] != "deploy")
        assert shown.rc == 0 and _width(shown.out) <= 80, shown.describe()


def test_config_in_80_columns_keeps_every_source_whole_on_a_line(tmp_path):
    from tests.support.cli import copy_sample

    # a project deep enough that `<its pyproject.toml>: <table key>` cannot fit a column
    repo = copy_sample(tmp_path / "company" / "ml")
    shown = flyte_build("config", cwd=repo, cache=tmp_path / "cache", env={"COLUMNS": "80"}, in_process=True)
    assert shown.rc == 0 and _width(shown.out) <= 80, shown.describe()
    lines = [line.strip("│ ") for line in shown.out.splitlines()]
    # each row's source names its key unbroken (the title names the whole pyproject path)
    for key in ("tool.hatch.build.targets.flyte.copy-style", "tool.hatch.build.targets.flyte.registry"):
        assert any(line.endswith(key) for line in lines), (key, shown.out)
    row = next(i for i, line in enumerate(lines) if line.startswith("envs.reporting.copy-style "))
    assert lines[row].endswith(" all") and "from pyproject.toml:" in lines[row + 1], shown.out
    assert any(line.endswith("from default") for line in lines)
    wide = flyte_build("config", cwd=repo, cache=tmp_path / "cache", env={"COLUMNS": "300"}, in_process=True)
    # room enough: a `from` column with the whole path
    assert f"{repo / 'pyproject.toml'}: tool.hatch.build.targets.flyte.copy-style" in wide.out, wide.out
    assert "value (from)" not in wide.out and "value (from)" in shown.out


def test_json_documents_share_a_schema_version_and_fail_as_json(repo, tmp_path):
    cache = tmp_path / "cache"
    docs = {
        "build": flyte_build("build", "--json", cwd=repo, cache=cache).json(),
        "targets": flyte_build("targets", "--json", cwd=repo, cache=cache, in_process=True).json(),
        "graph": flyte_build("graph", "--format", "json", cwd=repo, cache=cache, in_process=True).json(),
        "explain": flyte_build("explain", "bundle:inference", "--json", cwd=repo, cache=cache, in_process=True).json(),
        "plan": flyte_build("deploy", "--dry-run", "--json", cwd=repo, cache=cache).json(),
        "cache": flyte_build("cache", "stats", "--json", cwd=repo, cache=cache, in_process=True).json(),
    }
    for name, doc in docs.items():
        assert doc["schema_version"] == 1 and doc["ok"] is True, (name, doc)
    # one name for the deploy order across commands (the plan keeps `order` as an alias)
    assert docs["graph"]["deploy_order"] == docs["plan"]["deploy_order"] == docs["plan"]["order"]
    assert docs["graph"]["deploy_waves"] == docs["plan"]["deploy_waves"]
    bad = flyte_build("build", "--json", "nothing:x", cwd=repo, cache=cache)
    bad.assert_clean_error(2, "no target kind matches 'nothing'")
    assert bad.json()["ok"] is False and "no target kind matches 'nothing'" in bad.json()["error"]
    usage = flyte_build("graph", "--format", "json", "--bogus", cwd=repo, cache=cache, in_process=True)
    assert usage.rc == 2 and usage.json() == {"schema_version": 1, "ok": False, "exit_code": 2,
                                              "error": "flyte-build: unrecognized arguments: --bogus"}


@pytest.mark.timeout(300)
def test_unreachable_docker_engine_is_one_line_per_target_with_the_log(repo, tmp_path):
    require(shutil.which("docker") is not None, "no docker client on PATH")
    cache = tmp_path / "cache"
    run = flyte_build("build", "check:ml_training", "--jobs", "1", cwd=repo, cache=cache,
                      env={"DOCKER_HOST": "tcp://127.0.0.1:1", "COLUMNS": "80"})
    assert run.rc == 1, run.describe()
    # the image fails (or, when its tag is already in the registry, the check that runs it)
    failed = [line for line in run.err.splitlines() if line.startswith("failed ")]
    assert len(failed) == 1, run.err
    assert re.fullmatch(r"failed (image|check):ml_training: .* failed: Cannot connect to the Docker daemon at tcp://127\.0\.0\.1:1\. "
                        r"Is the docker daemon running\? \(full log: \S+\)|failed check:ml_training: the check did not run in image "
                        r"\S+ \(exit 125\): docker: Cannot connect to the Docker daemon at tcp://127\.0\.0\.1:1\. Is the docker daemon "
                        r"running\?\.? \(full log: \S+\)", failed[0]), failed
    log = Path(re.search(r"full log: (\S+)\)$", failed[0]).group(1))
    assert "Cannot connect to the Docker daemon" in log.read_text()
    assert "DockerException" not in run.err and "The content of stdout" not in run.err and "Traceback" not in run.err
    if failed[0].startswith("failed image:"):
        assert "skipped check:ml_training: dependency image:ml_training failed" in run.out
    # as the CI log sees it: the target's start, its one-line failure as it ends, and again in the summary
    assert "start check:ml_training" in run.err
    assert len([ln for ln in run.err.splitlines() if "Cannot connect" in ln]) == 2, run.err
    as_json = flyte_build("build", "check:ml_training", "--json", cwd=repo, cache=cache, env={"DOCKER_HOST": "tcp://127.0.0.1:1"})
    rec = [r for r in as_json.json()["targets"] if r["status"] == "failed"][0]
    assert as_json.rc == 1 and as_json.json()["ok"] is False and Path(rec["log"]).is_file()


def test_heartbeat_names_a_long_running_target(capsys, monkeypatch):
    import time

    from flyte_build import progress

    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.2)
    reporter = progress.RichReporter()
    reporter.start(["image:slow"])
    reporter.begin("image:slow")
    reporter.log("image:slow", "#7 [3/5] RUN pip install torch")
    time.sleep(0.7)
    reporter.stop()
    err = capsys.readouterr().err
    assert "start image:slow" in err
    assert re.search(r"still running image:slow \(0s\): #7 \[3/5\] RUN pip install torch", err), err


# a rule whose action is the same for every env (its key names no env): two
# targets of one run share it, and the second waits for the first's run
SHARED_RULE = '''\
import time
from flyte_build.rule_api import Inputs, Produced, Rule

def run(req):
    time.sleep(1.5)
    out = req.workdir / "out.txt"
    out.write_text("same for all")
    return Produced(files=(("out.txt", out),))

def rules():
    return [Rule(kind="shared", version="1", description="one action for every env",
                 inputs=lambda env, ctx: Inputs(params={"same": True}), run=run)]
'''


@pytest.mark.timeout(180)
def test_a_target_that_waited_for_an_identical_build_says_so(tmp_path):
    from tests.support.repos import env_module, make_repo

    files = {"pkg/__init__.py": "", "myrules/register.py": SHARED_RULE,
             "pkg/a.py": env_module("a", var="env_a"), "pkg/b.py": env_module("b", var="env_b")}
    root = make_repo(tmp_path / "repo", files, pyproject_extra='rules = ["myrules"]')
    run = flyte_build("build", "shared:*", "--jobs", "2", cwd=root, cache=tmp_path / "cache", env={"COLUMNS": "80"}).assert_ok()
    cells = [[c.strip() for c in line.split("│")] for line in run.out.splitlines() if "shared:" in line and "│" in line]
    rows = {c[1]: c[4] for c in cells}  # target -> result
    assert sorted(rows.values()) == ["built", "waited"], run.out
    waiter = next(t for t, word in rows.items() if word == "waited")
    builder = next(t for t in rows if t != waiter)
    assert f"waited {waiter}: the same action as {builder}, run once for both" in run.out.replace("\n", " ").replace("  ", " ")
    assert "1 waited" in run.out


@pytest.mark.timeout(300)
def test_a_pip_failure_is_one_line_naming_the_requirement(repo, tmp_path):
    tasks = repo / "services/preprocessing/tasks.py"
    tasks.write_text(tasks.read_text().replace('"six==1.17.0"', '"nosuchpkg-flyte-build-test==9.9"'))
    run = flyte_build("build", "pex:preprocessing", cwd=repo, cache=tmp_path / "cache")
    assert run.rc == 1, run.describe()
    (line,) = [ln for ln in run.err.splitlines() if ln.startswith("failed pex:preprocessing")]
    assert re.fullmatch(r"failed pex:preprocessing: pex failed \(exit \d+\): pip: ERROR: No matching distribution found for "
                        r"nosuchpkg-flyte-build-test==9\.9 \(full log: (\S+)\)", line), run.err
    assert "pid " not in run.err and "Traceback" not in run.err  # pex's command line stays in the log
    assert "nosuchpkg-flyte-build-test" in Path(re.search(r"full log: (\S+)\)", line).group(1)).read_text()


def test_a_slow_discovery_says_so_once_outside_a_terminal(capsys):
    import time

    from flyte_build import progress

    with progress.discovering(after=0.1):
        time.sleep(0.4)
    with progress.discovering(after=0.5):
        pass  # a cached discovery: nothing to say
    with progress.discovering(-1, after=0.05):  # -q
        time.sleep(0.2)
    assert capsys.readouterr().err == "  discovering environments (importing your modules)...\n"
