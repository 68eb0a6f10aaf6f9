"""The resident process gives a user exactly what a command run in its own
process gives: the same stdout (a `--json` document byte for byte once its
timings are gone), the same stderr lines, exit status and files.

Each test makes two identical checkouts, each with its own cache: every
command runs in `on` through its resident process (outside CI, as on a
laptop) and in `off` with `--no-daemon`, and the two answers are compared
after the checkouts' and caches' own paths are named alike. The daemon of
`on` must have served every command (its `served` count), and is stopped at
the end of the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import REPO, Run, copy_sample, flyte_build, popen
from tests.support.gitrepo import GIT_ENV
from tests.support.processes import wait_gone
from tests.support.repos import env_module, make_repo

pytestmark = pytest.mark.timeout(420)

NO_CI = {"CI": None, "FLYTE_BUILD_DAEMON": None}  # conftest turns the daemon off; a laptop has it on
_TIMING = re.compile(r"\b\d+(\.\d+)?\s?(ms|s)\b")
# printed only when discovery takes over 2 s: the resident process is faster, that is all
_SLOW_ONLY = ("discovering environments (importing your modules)",)


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT_ENV}, check=True, capture_output=True)


def _committed(root: Path) -> Path:
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    return root


# timings, and how discovery ran (a resident process keeps a warm discovery child: "warm"
# where a command of its own says "incremental"); what it found is compared
_MECHANISM = ("seconds", "how")


def _timeless(doc):
    if isinstance(doc, dict):
        return {k: _timeless(v) for k, v in doc.items() if k not in _MECHANISM}
    if isinstance(doc, list):
        return [_timeless(v) for v in doc]
    return doc


class Pair:
    """Two checkouts made by `make(dest)`; `on` served by its resident process."""

    def __init__(self, tmp: Path, make, project: str = ""):
        self.project = project  # the folder of its pyproject.toml: the daemon's
        # "on" and "nd" (no daemon): paths of one length, so tables wrap alike
        self.sides = {"on": tmp / "on", "off": tmp / "nd"}
        self.roots = {side: make(d / "repo") for side, d in self.sides.items()}
        self.caches = {side: d / "cache" for side, d in self.sides.items()}
        self.sent = 0  # commands the resident process must have served

    def run(self, side: str, *args: str, sub: str = "", env: dict | None = None, **kw) -> Run:
        flags = ("--no-daemon",) if side == "off" else ()
        if side == "on" and args[:1] != ("daemon",):
            self.sent += 1
        return flyte_build(*flags, *args, cwd=self.roots[side] / sub, cache=self.caches[side],
                           env={**NO_CI, **(env or {})}, **kw)

    def plain(self, side: str, text: str) -> str:
        where = self.sides[side]
        return text.replace(str(where.resolve()), "<side>").replace(str(where), "<side>")

    def answer(self, side: str, run: Run) -> tuple:
        out = self.plain(side, run.out)
        try:
            out = json.dumps(_timeless(json.loads(out)), indent=1, sort_keys=True)
        except ValueError:
            out = _TIMING.sub("T", out)
        # progress lines come in the order parallel targets end: compare them as a set of lines
        err = sorted(_TIMING.sub("T", line) for line in self.plain(side, run.err).splitlines()
                     if not any(s in line for s in _SLOW_ONLY))
        return run.rc, out, err

    def same(self, *args: str, sub: str = "", env: dict | None = None, **kw) -> Run:
        on, off = self.run("on", *args, sub=sub, env=env, **kw), self.run("off", *args, sub=sub, env=env, **kw)
        assert "resident process" not in on.err, on.describe()  # it served the command, no fallback
        assert self.answer("on", on) == self.answer("off", off), f"{on.describe()}\n=== --no-daemon:\n{off.describe()}"
        return on

    def edit(self, rel: str, change) -> None:
        for root in self.roots.values():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(change(p.read_text() if p.exists() else ""))

    def status(self, env: dict | None = None) -> dict:
        return self.run("on", "daemon", "status", "--json", sub=self.project, env=env).assert_ok().json()

    def served_everything(self) -> None:
        up = self.status()
        assert up["running"] is True and up["served"] == self.sent, up

    def stop(self, env: dict | None = None) -> None:
        self.run("on", "daemon", "stop", sub=self.project, env=env)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def sample(tmp_path):
    pair = Pair(tmp_path, lambda dest: _committed(copy_sample(dest)))
    yield pair
    pair.stop()


@pytest.mark.slow
def test_every_command_on_the_sample_answers_as_without_the_daemon(sample):
    p = sample
    p.same("targets")
    p.same("build")
    p.same("build")  # no-op
    p.same("build", "--json")
    p.same("build", "--out", "dist/x")
    on, off = _tree(p.roots["on"] / "dist/x"), _tree(p.roots["off"] / "dist/x")
    assert "manifest.json" in on and on.keys() == off.keys()
    assert {k: p.plain("on", v.decode("latin-1")) for k, v in on.items()} == \
           {k: p.plain("off", v.decode("latin-1")) for k, v in off.items()}
    p.edit("services/inference/tasks.py", lambda t: t + "\n\ndef added_helper() -> int:\n    return 4\n")
    built = p.same("build", "--json").json()
    assert "bundle:inference" in [t["target"] for t in built["targets"] if not t["cached"]]
    for args in (("targets", "-i"), ("targets", "--json"), ("graph", "--format", "mermaid"),
                 ("affected", "--since", "HEAD"), ("affected", "--since", "HEAD", "--json"), ("config",),
                 ("config", "--json"), ("explain", "bundle:inference"), ("cache", "stats"), ("--help",),
                 ("build", "--help"), ("build", "bundle:nope")):
        p.same(*args)
    p.same("targets", sub="services")  # a subfolder of the project
    p.same("build", "--json", sub="services/inference")
    # a variable the user's module reads at import: each command sees its own client's value
    p.edit("services/probe.py", lambda _: 'import os\n\nimport flyte\n\n'
           'env = flyte.TaskEnvironment(name=os.environ.get("FB_PARITY_ENV", "probe_a"))\n')
    named = p.same("targets", "--json", env={"FB_PARITY_ENV": "probe_b"}).json()
    plain = p.same("targets", "--json").json()
    assert "probe_b" in {e["env"] for e in named["envs"]} and "probe_a" in {e["env"] for e in plain["envs"]}
    # bad input: one line and exit 2; a syntax error in a user module: exit 2
    p.edit("pyproject.toml", lambda t: t.replace('copy-style = "loaded_modules"', 'copy-styl = "loaded_modules"'))
    p.same("build").assert_clean_error(2, "copy-styl", "pyproject.toml")
    p.edit("pyproject.toml", lambda t: t.replace('copy-styl = "loaded_modules"', 'copy-style = "loaded_modules"'))
    p.edit("services/probe.py", lambda t: t + "\ndef (\n")
    p.same("build").assert_clean_error(2, "services/probe.py", "SyntaxError")
    p.same("build", "--json")
    p.served_everything()
    # the two caches hold the same blobs
    assert sorted(f.name for f in (p.caches["on"] / "cas").rglob("*") if f.is_file()) == \
           sorted(f.name for f in (p.caches["off"] / "cas").rglob("*") if f.is_file())


# a target that takes a while, to see the heartbeat and to interrupt a build
SLOW_RULE = '''\
import time
from flyte_build.rule_api import Inputs, Produced, Rule

def run(req):
    time.sleep(1.5)
    out = req.workdir / "out.txt"
    out.write_text("slow")
    return Produced(files=(("out.txt", out),))

def rules():
    return [Rule(kind="slow", version="1", description="a target that takes a while",
                 inputs=lambda env, ctx: Inputs(params={"same": True}), run=run)]
'''
SMALL = {"pkg/__init__.py": "", "myrules/register.py": SLOW_RULE, "pkg/a.py": env_module("a")}


def _small(dest: Path, env: str = "a") -> Path:
    files = {**SMALL, "pkg/a.py": env_module(env)}
    return make_repo(dest, files, pyproject_extra='rules = ["myrules"]')


@pytest.fixture
def small(tmp_path):
    pair = Pair(tmp_path, _small)
    yield pair
    pair.stop()


def test_a_bad_storage_url_is_an_error_before_anything_is_built(small):
    """Any scheme: one line, exit 2, nothing discovered or built (it used to
    build every bundle and fail at the upload)."""
    for url, why in (("ftp://host/x", "unsupported scheme 'ftp'"), ("s3://", "no bucket"), ("gs://", "no bucket"),
                     ("az://", "no container"), ("file://host/x", "names a local path"),
                     ("grpc://127.0.0.1:1", "is a --cache only")):
        for side in ("on", "off"):
            small.run(side, "build", "--storage", url).assert_clean_error(2, f"--storage {url}", why)
    small.edit("pyproject.toml", lambda t: t + 'storage = "s3://"\n')
    small.same("build", "--json").assert_clean_error(2, "--storage s3://", "no bucket")
    for cache in small.caches.values():
        assert not (cache / "cas").exists() and not (cache / "state").exists(), sorted(cache.rglob("*"))
    small.served_everything()


def test_flyte_build_variables_are_the_commands_own(small):
    """$FLYTE_BUILD_HEARTBEAT, set by the client, is the command's (the resident
    process imported the progress module before any command existed)."""
    for side in ("on", "off"):
        run = small.run(side, "build", "slow:*", env={"FLYTE_BUILD_HEARTBEAT": "0.3"}).assert_ok()
        assert re.search(r"still running slow:a \(\d+s\)", run.err), run.describe()
    small.served_everything()


def test_user_code_in_the_command_imports_from_the_clients_path(small):
    """A rule set (user code run by the command itself) sees the client's
    sys.path: a console script's has no working directory on it (`-P` here),
    and the daemon's own `-c` put one there (a yaml.py where the user stands
    would shadow yaml)."""
    probe = ('import importlib.util, sys\n'
             'sys.stderr.write(f"probe: {importlib.util.find_spec(\'cwd_probe\') is not None}\\n")\n')
    small.edit("myrules/register.py", lambda t: probe + t)
    for side in small.sides.values():
        (side / "cwd_probe.py").write_text("")  # beside the repository, where the command runs
    run = small.same("--root-dir", "repo", "targets", sub="..", python_flags=("-P",))
    assert "probe: False" in run.err, run.describe()
    small.served_everything()


def test_the_resident_process_imports_read_no_variable_of_ours():
    """What the resident process imports before any command (its WARM list,
    the parser, the built-in rules) reads no variable but Python's own: a
    module reading one at import would keep the first client's value."""
    script = """\
import os, sys
read = set()
class Recorded(os._Environ):
    def __getitem__(self, k):
        read.add(k)
        return super().__getitem__(k)
    def __contains__(self, k):
        read.add(k)
        return super().__contains__(k)
e = os.environ
os.environ = Recorded(e._data, e.encodekey, e.decodekey, e.encodevalue, e.decodevalue)
from flyte_build.daemon import server
server._warm()
print(" ".join(sorted(read)))
"""
    got = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "FLYTE_BUILD_HEARTBEAT": "5"}, cwd="/")
    assert got.returncode == 0, got.stderr
    # argparse's terminal size and gettext's locale: read again when a command formats its help
    assert set(got.stdout.split()) <= {"COLUMNS", "LINES", "LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES"}, got.stdout


def _wait_for_command(pair: Pair, seconds: float = 60) -> int:
    deadline = time.time() + seconds
    while time.time() < deadline:
        command = pair.status().get("command")
        if command:
            return command
        time.sleep(0.05)
    raise AssertionError("the build never started in the resident process")


def _interrupted(pair: Pair, side: str, mark: Path, signum: int) -> Run:
    flags = ("--no-daemon",) if side == "off" else ()
    proc = popen(*flags, "build", "--json", cwd=pair.roots[side], cache=pair.caches[side],
                 env={**NO_CI, "FB_MARK": str(mark)})
    if side == "on":
        pair.sent += 1
        command = _wait_for_command(pair)
    deadline = time.time() + 60
    while not mark.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert mark.exists(), "the discovery never ran the module"
    proc.send_signal(signum)  # inside discovery on both sides
    out, err = proc.communicate(timeout=120)
    if side == "on":
        assert wait_gone(command, 10), "the command went on after its client was interrupted"
    return Run(proc.returncode, out, err)


@pytest.mark.slow
def test_ctrl_c_of_the_client_ends_the_command_as_without_the_daemon(small, tmp_path):
    small.same("targets")
    # the next discovery marks when it runs the module, then takes 4 s
    small.edit("pkg/a.py", lambda t: t + "\nimport os, pathlib, time\nif os.environ.get('FB_MARK'):\n"
               "    pathlib.Path(os.environ['FB_MARK']).touch()\n    time.sleep(4)\n")
    # Ctrl-C, then a SIGTERM: the client's exit is the command's (130; killed by SIGTERM)
    for signum, killed in ((signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)):
        answers = {side: _interrupted(small, side, tmp_path / f"{side}-{signum}.mark", signum) for side in ("on", "off")}
        assert small.answer("on", answers["on"]) == small.answer("off", answers["off"]), answers
        assert answers["on"].rc == killed and "Traceback" not in answers["on"].err, answers["on"]
    for side in ("on", "off"):
        small.run(side, "cache", "verify").assert_ok()
    again = small.same("build", "--json", "bundle:*")
    assert [t["target"] for t in again.json()["targets"]] == ["bundle:a"]
    small.served_everything()


@pytest.mark.slow
def test_two_repositories_at_once_and_two_clients_racing_on_one(tmp_path):
    pairs = [Pair(tmp_path / "1", _small), Pair(tmp_path / "2", lambda dest: _small(dest, "b"))]
    try:
        # two repositories at once: a daemon each, each answering for its own
        procs = [popen("build", "--json", "bundle:*", cwd=p.roots["on"], cache=p.caches["on"], env=NO_CI) for p in pairs]
        runs = [Run(pr.wait(timeout=180), *pr.communicate()) for pr in procs]
        for pair, run in zip(pairs, runs):
            pair.sent += 1
            alone = pair.run("off", "build", "--json", "bundle:*")
            assert pair.answer("on", run) == pair.answer("off", alone), (run, alone)
        assert [list(r.digests()) for r in runs] == [["bundle:a"], ["bundle:b"]]
        ups = [p.status() for p in pairs]
        assert ups[0]["pid"] != ups[1]["pid"] and ups[0]["socket"] != ups[1]["socket"], ups
        # two clients racing on one repository after an edit: one builds, the other waits and reads it
        one = pairs[0]
        one.edit("pkg/a.py", lambda t: t + "\nVALUE = 2\n")
        procs = [popen("build", "--json", "bundle:*", cwd=one.roots["on"], cache=one.caches["on"], env=NO_CI)
                 for _ in range(2)]
        runs = [Run(pr.wait(timeout=180), *pr.communicate()) for pr in procs]
        one.sent += 2
        alone = one.run("off", "build", "--json", "bundle:*").assert_ok()
        assert all(r.rc == 0 and "Traceback" not in r.err for r in runs), runs
        assert runs[0].digests() == runs[1].digests() == alone.digests()
        assert sorted(t["cached"] for r in runs for t in r.json()["targets"]) == [False, True]
        one.run("on", "cache", "verify").assert_ok()
        for pair in pairs:
            pair.served_everything()
        assert one.status()["pid"] == ups[0]["pid"]
    finally:
        for pair in pairs:
            pair.stop()


@pytest.mark.slow
def test_an_upgraded_flyte_build_replaces_the_old_resident_process(small, tmp_path):
    """Another version is another socket: the old daemon, never asked again,
    sees its files change and exits instead of waiting out its idle timeout."""
    pkg = tmp_path / "pkg"
    for name in ("flyte_build", "rules"):
        shutil.copytree(REPO / name, pkg / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {"PYTHONPATH": str(pkg)}
    try:
        small.run("on", "targets", env=env).assert_ok()
        old = small.status(env)
        assert old["running"] and old["version"] == "0.1.0", old
        (pkg / "flyte_build" / "__about__.py").write_text('__version__ = "0.1.1"\n')
        small.run("on", "targets", env=env).assert_ok()
        assert wait_gone(old["pid"], 20), "the old resident process outlived its upgrade"
        log = Path(old["socket"]).with_suffix(".log").read_text()
        assert "exiting: flyte-build's files changed" in log, log
        new = small.status(env)
        assert new["running"] and new["version"] == "0.1.1" and new["pid"] != old["pid"] and new["served"] == 1, new
    finally:
        small.stop(env)


# a project in ml/ of a larger git repository, importing a package only its own .venv has
TINYDEP = 'NAME = "tiny"\n'
COMPANY = {
    "web/index.html": "<html></html>\n", ".gitignore": ".venv/\ndist/\n",
    "ml/pyproject.toml": '[project]\nname = "ml"\nversion = "0.1.0"\n\n[tool.hatch.build.targets.flyte]\n',
    "ml/pkg/__init__.py": "",
    "ml/pkg/a.py": env_module("a", imports="import tinydep"),
    "ml/pkg/b.py": env_module("b"),
}


def _company(dest: Path) -> Path:
    make_repo(dest, COMPANY)
    _committed(dest)
    # the project's own interpreter: flyte from the base interpreter's site-packages, tinydep its own (<1 s)
    venv = dest / "ml" / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "tinydep.py").write_text(TINYDEP)
    return dest


@pytest.mark.slow
def test_a_project_below_the_git_root_with_its_own_venv_answers_as_without_the_daemon(tmp_path):
    p = Pair(tmp_path, _company, project="ml")
    bare = tmp_path / "bare"  # a Python without flyte
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    try:
        built = p.same("build", "--json", sub="ml").json()
        assert sorted(built["envs"] if "envs" in built else [t["env"] for t in built["targets"]]) == ["a", "b"]
        p.same("targets", sub="ml/pkg")  # a subfolder of the project
        shown = p.same("config", "--json", sub="ml").json()["flyte_build"]["python"]
        assert shown["source"].startswith("the .venv in "), shown
        p.edit("ml/pkg/b.py", lambda t: t + "\nVALUE = 2\n")
        p.same("affected", "--since", "HEAD", sub="ml")
        p.same("build", "--json", sub="ml")
        # --python: the interpreter running flyte-build has no tinydep
        p.same("--python", sys.executable, "build", sub="ml").assert_clean_error(2, "tinydep", "chosen by --python")
        # $VIRTUAL_ENV set by the client: its own interpreter, each command its own
        for side in ("on", "off"):
            venv = p.roots[side] / "ml" / ".venv"
            runs = [p.run(side, "config", "--json", sub="ml", env={"VIRTUAL_ENV": str(venv)}),
                    p.run(side, "build", sub="ml", env={"VIRTUAL_ENV": str(bare)}),
                    p.run(side, "build", "--json", sub="ml", env={"VIRTUAL_ENV": str(venv)})]
            assert runs[0].assert_ok().json()["flyte_build"]["python"]["source"] == "$VIRTUAL_ENV", runs[0].out
            runs[1].assert_clean_error(2, str(bare), "$VIRTUAL_ENV", "has no flyte")
            runs[2].assert_ok()
            if side == "on":
                on = runs
            else:
                assert [p.answer("on", r) for r in on] == [p.answer("off", r) for r in runs]
        p.served_everything()
    finally:
        p.stop()
