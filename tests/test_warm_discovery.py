"""Warm discovery (flyte_build/discovery/warm.py): after an edit, a fork of the warm child
runs only the modules the edit reaches, and the result is a cold discovery's,
byte for byte; whatever it cannot vouch for falls back to a cold child.

The differential test applies seeded random edit sequences (edit, add, rename,
delete modules; a data file and an environment variable read at import; an
import cycle; a module starting a thread; a syntax error) to a generated
multi-env repository, and after every step compares the warm discovery (through
`discover`'s own cache, as a user's runs go) with a cold one in a fresh cache:
the document, the witnesses, the flyte settings and the bookkeeping entry the
next run relies on. One warm child serves all the sequences: each starts from
the same tree, which is the warm child's.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flyte_build.config import settings as config_mod
from flyte_build.discovery.discover import Selection, discover
from flyte_build.discovery.warm import WarmDiscovery
from flyte_build.errors import UserError
from flyte_build.stores.file_digests import FileDigests
from flyte_build.stores.local_store import LocalStore

SERVICES = 5


def _tasks(i: int, value: str = "0") -> str:
    dep = f"from services.svc_{i - 1}.tasks import env as upstream\n" if i % 3 else ""
    deps = ", depends_on=[upstream]" if i % 3 else ""
    return textwrap.dedent(f"""\
        import os

        import flyte

        from libs.common import settings, text
        from services.svc_{i} import helpers
        """) + dep + textwrap.dedent(f"""\

        STAGE = os.environ.get("WARM_STAGE", "dev") if {i} == 2 else "fixed"
        env = flyte.TaskEnvironment(name="svc_{i}", env_vars={{"V": "{value}", "STAGE": STAGE,
                                    "TAG": settings.load()["tag"] if {i} % 2 else "none"}}{deps})


        @env.task
        async def run_{i}(x: int) -> int:
            return helpers.twice(x) + len(text.upper("a"))
        """)


def _files() -> dict[str, str]:
    files = {
        "pyproject.toml": '[project]\nname = "warmrepo"\nversion = "0.1.0"\n\n[tool.hatch.build.targets.flyte]\n',
        "libs/__init__.py": "",
        "libs/common/__init__.py": "",
        "libs/common/text.py": "def upper(s: str) -> str:\n    return s.upper()\n",
        # read through a kept module's cached function: a module run again does not read it again
        "libs/common/settings.py": textwrap.dedent("""\
            import functools
            import json
            import os

            HERE = os.path.dirname(__file__)


            @functools.lru_cache(maxsize=None)
            def load() -> dict:
                with open(os.path.join(HERE, "settings.json")) as f:
                    return json.load(f)
            """),
        "libs/common/settings.json": '{"tag": "t0"}\n',
        "libs/cyc/__init__.py": "",
        # an import cycle
        "libs/cyc/a.py": "import libs.cyc.b\n\nA = 1\n\n\ndef a() -> int:\n    return libs.cyc.b.B\n",
        "libs/cyc/b.py": "import libs.cyc.a\n\nB = 2\n\n\ndef b() -> int:\n    return libs.cyc.a.A\n",
        "services/__init__.py": "",
    }
    for i in range(SERVICES):
        files[f"services/svc_{i}/__init__.py"] = ""
        files[f"services/svc_{i}/tasks.py"] = _tasks(i)
        files[f"services/svc_{i}/helpers.py"] = ("import libs.cyc.a\n\n" if i == 1 else "") + \
            "def twice(x: int) -> int:\n    return 2 * x\n"
    return files


def write_tree(root: Path, files: dict[str, str]) -> None:
    if root.exists():
        shutil.rmtree(root)
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


class Discoveries:
    """The warm discovery (one WarmDiscovery, one cache) and cold ones of the same tree."""

    def __init__(self, root: Path, tmp: Path):
        self.root, self.tmp, self.n = root, tmp, 0
        self.warm = WarmDiscovery()
        self._cfg = None  # the config to use instead of the repository's

    def _discover(self, cache: Path, warm):
        cfg = self._cfg or config_mod.load(self.root)
        store = LocalStore(cache)
        digests = FileDigests(store.root / "state", str(cfg.root))
        try:
            return discover(cfg, Selection(), store, digests, warm=warm)
        except UserError as exc:
            return exc
        finally:
            digests.save()

    def warm_one(self):
        return self._discover(self.tmp / "warm-cache", self.warm)

    def cold_one(self):
        self.n += 1
        got = self._discover(self.tmp / f"cold-{self.n}", None)
        return got, self.tmp / f"cold-{self.n}"

    def compare(self, what: str):
        """Discover warm and cold (at once: two processes); both must give the same bytes.
        The warm result's `how`."""
        with ThreadPoolExecutor(1) as pool:
            cold = pool.submit(self.cold_one)
            w = self.warm_one()
            c, cold_cache = cold.result()
        if isinstance(c, UserError) or isinstance(w, UserError):
            assert str(w) == str(c), what
            return "error"
        assert c.how == "full"
        assert _document(w) == _document(c), what
        assert _entry(self.tmp / "warm-cache") == _entry(cold_cache), what
        shutil.rmtree(cold_cache)
        return w.how


def _document(d) -> str:
    return json.dumps({"doc": d.to_json(), "witness": d.witness, "reads": d.reads, "flyte": d.flyte,
                       "candidates": d.candidates, "walked": d.walked_dirs, "paths": d.witness_paths},
                      sort_keys=True)


def _entry(cache: Path) -> dict:
    """The bookkeeping the next run relies on (the import graph, the envs, the prints, the file digests)."""
    path = max((cache / "discovery").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)  # this run's settings
    e = json.loads(path.read_text())
    return {k: e.get(k) for k in ("graph", "all_envs", "files", "candidates", "incremental", "code", "reads", "result")}


# -- the random edits ---------------------------------------------------------------


class Edits:
    """Seeded edits to the generated tree; each returns what it did."""

    def __init__(self, root: Path, rng: random.Random):
        self.root, self.rng, self.k = root, rng, 0

    def _modules(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*.py") if p.name != "__init__.py")

    def _extra(self) -> list[str]:
        return [m for m in self._modules() if "/extra_" in m or m.startswith("services/new_")]

    def edit(self) -> str:
        rel = self.rng.choice(self._modules())
        p = self.root / rel
        self.k += 1
        p.write_text(p.read_text() + f"\nEDIT_{self.k} = {self.k}\n")
        return f"edit {rel}"

    def env_value(self) -> str:
        i = self.rng.randrange(SERVICES)
        self.k += 1
        p = self.root / f"services/svc_{i}/tasks.py"
        text = p.read_text()
        p.write_text(text.replace('"V": "', f'"V": "{self.k}-', 1))
        return f"env value svc_{i}"

    def add(self) -> str:
        self.k += 1
        if self.rng.random() < 0.5:
            i = self.rng.randrange(SERVICES)
            rel = f"services/svc_{i}/extra_{self.k}.py"
            # a task added to another module's environment
            text = (f"from services.svc_{i}.tasks import env\n\n\n@env.task\n"
                    f"async def extra_{self.k}(x: int) -> int:\n    return x\n")
        else:
            rel = f"services/new_{self.k}.py"
            text = f'import flyte\n\nenv = flyte.TaskEnvironment(name="new_{self.k}")\n'
        (self.root / rel).write_text(text)
        return f"add {rel}"

    def rename(self) -> str:
        extra = self._extra()
        if not extra:
            return self.add()
        rel = self.rng.choice(extra)
        self.k += 1
        new = rel.rsplit("/", 1)[0] + f"/extra_{self.k}.py" if "/extra_" in rel else f"services/new_{self.k}r.py"
        text = (self.root / rel).read_text()
        if "services/new_" in rel:
            text = text.replace('name="new_', f'name="r{self.k}_')
        (self.root / rel).unlink()
        (self.root / new).write_text(text)
        return f"rename {rel} {new}"

    def delete(self) -> str:
        extra = self._extra()
        if not extra:
            return self.edit()
        rel = self.rng.choice(extra)
        (self.root / rel).unlink()
        return f"delete {rel}"

    def data(self) -> str:
        self.k += 1
        (self.root / "libs/common/settings.json").write_text(json.dumps({"tag": f"t{self.k}"}) + "\n")
        return "data file"

    def variable(self) -> str:
        self.k += 1
        os.environ["WARM_STAGE"] = f"stage{self.k}"
        return "variable"

    def cycle(self) -> str:
        self.k += 1
        p = self.root / "libs/cyc/b.py"
        p.write_text(p.read_text().replace("B = ", f"B = {self.k} + "))
        return "cycle"

    def thread(self) -> str:
        p = self.root / "services/threaded.py"
        if p.exists():
            p.unlink()
            return "thread off"
        p.write_text("import threading\nimport time\n\nthreading.Thread(target=time.sleep, args=(0.1,), daemon=True).start()\n")
        return "thread on"

    def syntax(self) -> str:
        rel = self.rng.choice(self._modules())
        p = self.root / rel
        p.write_text(p.read_text() + "\ndef broken(:\n")
        return f"syntax error {rel}"

    def one(self) -> str:
        ops = [self.edit] * 3 + [self.env_value] * 2 + [self.add] * 2 + [self.rename, self.delete, self.data,
                                                                           self.variable, self.cycle, self.thread]
        ops += [self.syntax] if self.rng.random() < 0.2 else []
        return self.rng.choice(ops)()


@pytest.mark.timeout(300)
def test_random_edit_sequences_equal_cold_discovery(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WARM_STAGE", "dev")
    files = _files()
    root = tmp_path / "repo"
    write_tree(root, files)
    d = Discoveries(root, tmp_path)
    try:
        first = d.warm_one()
        assert first.how == "full" and d.warm.why == "first discovery: starting the warm child"
        hows = []
        for seq in range(50):
            rng = random.Random(seq)
            if seq:  # back to the warm child's own tree
                write_tree(root, files)
                os.environ["WARM_STAGE"] = "dev"
            edits = Edits(root, rng)
            done = []
            for _ in range(2):
                done.append(edits.one())
                hows.append(d.compare(f"sequence {seq}: {done}"))
        # the forks served most steps (the rest: errors, early cutoffs, fallbacks)
        assert hows.count("warm") >= len(hows) // 2, hows
    finally:
        d.warm.close()


# -- each fallback falls back ---------------------------------------------------------


def _write(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def _edit_helpers(root: Path) -> None:
    p = root / "services/svc_0/helpers.py"
    p.write_text(p.read_text() + "\nEDITED = 1\n")


def _ext_lib(root: Path, tmp: Path, monkeypatch) -> None:
    # a library outside the repository that reads a file for the module importing it
    _write(tmp, "extlib/extreader.py", "def read(path):\n    with open(path) as f:\n        return f.read()\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp / "extlib"))
    _write(root, "services/svc_0/data.txt", "one\n")
    p = root / "services/svc_0/helpers.py"
    p.write_text("import os\n\nimport extreader\n\nDATA = extreader.read(os.path.join(os.path.dirname(__file__), "
                 "'data.txt'))\n\n" + p.read_text())


def _namespace(root: Path, tmp: Path, monkeypatch) -> None:
    _write(root, "nspkg/mod.py", "X = 1\n")
    p = root / "services/svc_0/helpers.py"
    p.write_text("import nspkg.mod\n\n" + p.read_text())


def _python_link(tmp: Path) -> str:
    import sys

    link = tmp / "other-python"
    link.symlink_to(os.path.realpath(sys.executable))
    return str(link)


# (name, set-up before the warm child starts, the change after, what `why` says, how the warm result was had)
FALLBACKS = [
    ("startup variable", None, lambda root, tmp, mp: (mp.setenv("PYTHONWARNINGS", "ignore"), _edit_helpers(root)),
     "environment variable PYTHONWARNINGS changed", "full"),
    ("read by a library", _ext_lib, lambda root, tmp, mp: _write(root, "services/svc_0/data.txt", "two\n"),
     "data.txt (files) changed: it was read by code outside the repository", "full"),
    ("added module loaded already", _namespace,
     lambda root, tmp, mp: (_write(root, "nspkg/__init__.py", "Y = 2\n"), _edit_helpers(root)),
     "added nspkg/__init__.py is module nspkg, loaded already", "full"),
    ("load failure in the fork", None, lambda root, tmp, mp: _write(root, "services/svc_0/helpers.py", "def broken(:\n"),
     "a module failed to load: a cold child gives the result", "error"),
    ("fork ends without a result", None,
     lambda root, tmp, mp: _write(root, "services/svc_0/helpers.py", "import os\n\nos._exit(3)\n"),
     "the warm child's fork ended without a result", "error"),
    ("thread at import", lambda root, tmp, mp: _write(root, "services/threaded.py", "import threading\nimport time\n\n"
                                                      "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"),
     lambda root, tmp, mp: _edit_helpers(root), "a module started a thread at import", "full"),
    ("process at import", lambda root, tmp, mp: _write(root, "services/proc.py", "import subprocess\n\n"
                                                       "subprocess.Popen(['sleep', '30'])\n"),
     lambda root, tmp, mp: _edit_helpers(root), "a module started a process at import", "full"),
    ("sys.path changed at import", lambda root, tmp, mp: _write(root, "services/pathy.py", "import sys\n\n"
                                                                "sys.path.append('/nonexistent-dir')\n"),
     lambda root, tmp, mp: _edit_helpers(root), "a module changed sys.path at import", "full"),
    ("environment changed at import", lambda root, tmp, mp: _write(root, "services/envy.py", "import os\n\n"
                                                                   "os.environ['SET_AT_IMPORT'] = '1'\n"),
     lambda root, tmp, mp: _edit_helpers(root), "a module changed os.environ at import", "full"),
    ("load failure in the warm child", lambda root, tmp, mp: _write(root, "services/bad.py", "raise ValueError('no')\n"),
     lambda root, tmp, mp: (root / "services/bad.py").unlink(), "had load failures", "full"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", FALLBACKS, ids=[c[0] for c in FALLBACKS])
def test_each_fallback_falls_back_to_a_cold_child(case, tmp_path: Path, monkeypatch):
    _name, before, after, why, how = case
    root = tmp_path / "repo"
    write_tree(root, _files())
    if before is not None:
        before(root, tmp_path, monkeypatch)
    d = Discoveries(root, tmp_path)
    try:
        d.warm_one()
        started = d.warm.why  # what the new warm child said of itself
        after(root, tmp_path, monkeypatch)
        assert d.compare(why) == how
        assert why in f"{started} | {d.warm.why}", (started, d.warm.why)
        # and the next edit is served again (by the same warm child or a new one), still equal
        if how != "error":
            _edit_helpers(root)
            assert d.compare("after the fallback") in ("warm", "full")
    finally:
        d.warm.close()


@pytest.mark.timeout(120)
def test_an_init_added_to_and_removed_from_a_namespace_package(tmp_path: Path):
    root = tmp_path / "repo"
    files = _files()
    files["nspkg/mod.py"] = "X = 1\n"
    files["services/svc_0/helpers.py"] = "import nspkg.mod\n\n" + files["services/svc_0/helpers.py"]
    write_tree(root, files)
    d = Discoveries(root, tmp_path)
    try:
        d.warm_one()
        (root / "nspkg/__init__.py").write_text("import os\nY = os.sep\n")
        d.compare("__init__.py added")
        assert "nspkg/__init__.py" in d.warm_one().loaded_files
        (root / "nspkg/__init__.py").unlink()
        d.compare("__init__.py removed")
        assert "nspkg/__init__.py" not in d.warm_one().loaded_files
    finally:
        d.warm.close()


@pytest.mark.timeout(120)
def test_other_settings_and_an_ended_warm_child_start_a_new_one(tmp_path: Path):
    root = tmp_path / "repo"
    write_tree(root, _files())
    d = Discoveries(root, tmp_path)
    try:
        d.warm_one()
        _edit_helpers(root)
        assert d.compare("served") == "warm" and d.warm.why is None
        old = d.warm._child.proc
        os.kill(old.pid, 9)
        old.wait()  # gone before the next discovery asks (else its fork's answer is what fails)
        _edit_helpers(root)
        assert d.compare("killed") == "full" and d.warm.why == "the warm child had ended"
        # another interpreter (the settings key names it): a new warm child, then served again
        other = _python_link(tmp_path)
        cfg = config_mod.load(root)
        from dataclasses import replace

        d._cfg = replace(cfg, python=other)
        _edit_helpers(root)
        assert d.compare("interpreter") == "full" and d.warm.why.startswith("the settings changed")
        _edit_helpers(root)
        assert d.compare("served again") == "warm"
    finally:
        d.warm.close()


@pytest.mark.timeout(120)
def test_a_handle_shares_the_warm_child_with_the_next_command(tmp_path: Path):
    # a resident process runs each command in a fork: each command has its own
    # WarmDiscovery object, and finds the warm child the first one started through the handle
    root = tmp_path / "repo"
    write_tree(root, _files())
    handle = tmp_path / "handle" / "warm.json"
    handle.parent.mkdir(mode=0o700)
    d = Discoveries(root, tmp_path)
    d.warm = WarmDiscovery(handle=str(handle))
    assert d.warm_one().how == "full"
    pid = json.loads(handle.read_text())["pid"]
    for step in range(2):
        d.warm = WarmDiscovery(handle=str(handle))  # the next command
        _edit_helpers(root)
        assert d.compare(f"command {step}") == "warm" and d.warm.why is None
        assert json.loads(handle.read_text())["pid"] == pid
    d.warm.close()
    assert not handle.exists()
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # reaped by this process's Popen only in the first object: poll
            os.kill(pid, 0)
            import time

            time.sleep(0.05)
            os.waitpid(pid, os.WNOHANG)


@pytest.mark.timeout(180)
def test_build_uses_the_resident_warm_discovery(tmp_path: Path, monkeypatch):
    # what a resident process sets up once (warm.RESIDENT) serves `flyte-build build` after an edit;
    # -v says why the first discovery was not a fork
    from flyte_build.discovery import warm as warm_mod
    from tests.support.cli import flyte_build

    root = tmp_path / "repo"
    write_tree(root, _files())
    handle = tmp_path / "h" / "warm.json"
    handle.parent.mkdir(mode=0o700)
    monkeypatch.setattr(warm_mod, "RESIDENT", WarmDiscovery(handle=str(handle)))
    cache = tmp_path / "cache"
    try:
        first = flyte_build("build", "-v", cwd=root, cache=cache, in_process=True)
        assert first.rc == 0, first.err
        assert "discovery: full: first discovery: starting the warm child" in first.err
        _edit_helpers(root)
        doc = flyte_build("build", "--json", cwd=root, cache=cache, in_process=True).assert_ok().json()
        assert doc["discovery"]["how"] == "warm"
        cold = flyte_build("build", "--json", cwd=root, cache=tmp_path / "cold", in_process=True).assert_ok().json()
        assert [t["key"] for t in doc["targets"]] == [t["key"] for t in cold["targets"]]
    finally:
        warm_mod.RESIDENT.close()


@pytest.mark.timeout(60)
def test_a_forks_import_graph_from_the_warm_childs_edges_equals_one_found_afresh(tmp_path: Path):
    """The warm child keeps its import events' edges by owner; a fork reuses the
    owners it kept and resolves only what its modules recorded again. The graph
    must be the one a tracker without that memo finds from the same events: an
    import the edited module dropped is gone, a new one is there, and with a
    module renamed (other maps) nothing kept is used."""
    from flyte_build.discovery import child_envs
    from flyte_build.discovery.child import _ImportTracker

    root = str(tmp_path)
    child_envs.set_root(root)
    p = {m: f"{root}/{m.replace('.', '/')}.py" for m in ("pkg", "pkg.a", "pkg.b", "pkg.c", "app")}
    by_name = {m: os.path.relpath(f, root) for m, f in p.items()}
    by_path = {f: by_name[m] for m, f in p.items()}
    events = [
        (p["app"], "pkg", 0, None, ("a", "b")), (p["app"], "pkg", 0, None, ("a", "b")),
        (p["pkg.a"], "b", 1, "pkg", None), (p["pkg.b"], "pkg.c", 0, None, ["x"]),
        (None, "pkg.c", 0, None, None), (p["app"], "os", 0, None, None),
    ]

    def afresh(evs, maps=(by_name, by_path)):
        t = _ImportTracker(root)
        t.events = list(evs)
        return t.edges(*maps)

    warm = _ImportTracker(root)
    warm.events, warm.memo = list(events), {}
    assert warm.edges(by_name, by_path) == afresh(events)
    assert warm.memo and warm.memo_maps is not None
    # a fork: app.py runs again and now imports pkg.c instead of pkg.a, pkg.b
    kept = [e for e in warm.events if e[0] != p["app"]]
    again = [(p["app"], "pkg.c", 0, None, None)]
    warm.events[:] = kept
    warm.forget_owners({p["app"]})
    warm.events.extend(again)
    graph, orphans = warm.edges(by_name, by_path)
    assert (graph, orphans) == afresh(kept + again)
    assert graph["app.py"] == {"pkg.py", "pkg/c.py"}  # the dropped pkg.a / pkg.b edges are gone
    # other maps (pkg.b renamed pkg.d): the kept edges do not stand
    renamed = ({**{k: v for k, v in by_name.items() if k != "pkg.b"}, "pkg.d": "pkg/b.py"}, by_path)
    assert warm.edges(*renamed) == afresh(kept + again, renamed)
    assert "pkg/b.py" not in warm.edges(*renamed)[0].get("pkg/a.py", set())


@pytest.mark.timeout(60)
def test_a_background_warm_child_is_not_kept_when_an_edit_may_have_raced_its_import(tmp_path: Path):
    """warm_prestart keeps a warm child started in the background only if
    nothing it loaded or read changed after it started: its snapshot is taken
    after the import and would otherwise vouch for bytes the child never ran."""
    from types import SimpleNamespace

    from flyte_build.discovery.warm_prestart import _touched_since

    (tmp_path / "pkg").mkdir()
    mod, data = tmp_path / "pkg" / "mod.py", tmp_path / "data.json"
    mod.write_text("X = 1\n")
    data.write_text("{}")
    old = 1_000_000_000 * 1_000_000  # 2001: long before the start below
    for p in (mod, data, tmp_path / "pkg", tmp_path):
        os.utime(p, ns=(old, old))
    began = old + 10**9
    snap = SimpleNamespace(files={"pkg/mod.py": "d"}, reads={("files", str(data)): None, ("environ", "HOME"): None,
                                                             ("files", str(tmp_path / "absent.json")): None})
    # ctime cannot be set back: only what a real edit moves is compared past it
    assert not _touched_since(str(tmp_path), snap, os.stat(mod).st_ctime_ns + 1)
    assert _touched_since(str(tmp_path), snap, began)  # ctime is now: an edit just now looks the same
    mod.write_text("X = 2\n")
    assert _touched_since(str(tmp_path), snap, os.stat(data).st_ctime_ns + 1)
    later = os.stat(mod).st_ctime_ns + 1
    assert not _touched_since(str(tmp_path), snap, later)
    (tmp_path / "absent.json").write_text("{}")  # a file read as missing appears: its directory changed
    assert _touched_since(str(tmp_path), snap, later)
    (tmp_path / "absent.json").unlink()
    later = max(os.stat(tmp_path).st_mtime_ns, os.stat(tmp_path).st_ctime_ns) + 1
    assert not _touched_since(str(tmp_path), snap, later)
    mod.unlink()  # a module it loaded is gone
    assert _touched_since(str(tmp_path), snap, later)
