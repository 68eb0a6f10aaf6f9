"""Incremental discovery: after an edit, the child re-imports only the modules
the edit affects, and the result is what a full discovery of the tree gives.

Each step edits the tree, discovers with the warm cache (incremental) and with
a fresh cache (full), and compares both the results and the bookkeeping the
next incremental run will rely on (the import graph, every env created).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.generate import Shape, generate
from flyte_build.config import settings as config_mod
from flyte_build.discovery.discover import Selection, discover
from flyte_build.errors import UserError
from flyte_build.stores.file_digests import FileDigests
from flyte_build.stores.local_store import LocalStore
from tests.support.cli import build_json, copy_sample


class Repo:
    def __init__(self, root: Path, tmp: Path):
        self.root = root
        self.tmp = tmp
        self.cache = tmp / "warm"
        self.n = 0

    def _discover(self, cache: Path, sel: Selection = Selection()):
        cfg = config_mod.load(self.root)
        store = LocalStore(cache)
        digests = FileDigests(store.root / "state", str(cfg.root))
        try:
            return discover(cfg, sel, store, digests)
        finally:
            digests.save()

    def warm(self, sel: Selection = Selection()):
        return self._discover(self.cache, sel)

    def full(self, sel: Selection = Selection()):
        self.n += 1
        return self._discover(self.tmp / f"full-{self.n}", sel)

    def entry(self, cache: Path) -> dict:
        (path,) = (cache / "discovery").glob("*.json")
        return json.loads(path.read_text())

    def check(self, *, requested: set[str] | None = None, how: str = "incremental"):
        """Discover incrementally and fully; both must agree. Returns the incremental result."""
        inc = self.warm()
        full = self.full()
        assert inc.how == how, (inc.how, inc.requested)
        assert full.how == "full"
        assert inc.to_json() == full.to_json()
        warm_entry, full_entry = self.entry(self.cache), self.entry(self.tmp / f"full-{self.n}")
        for key in ("graph", "all_envs", "files", "candidates", "incremental", "code"):
            assert warm_entry.get(key) == full_entry.get(key), key
        if requested is not None:
            assert set(inc.requested) == requested
        return inc

    def edit(self, rel: str, old: str | None, new: str) -> None:
        p = self.root / rel
        text = p.read_text()
        if old is None:
            text += new
        else:
            assert old in text, (rel, old)
            text = text.replace(old, new)
        p.write_text(text)


def _error(fn) -> str:
    with pytest.raises(UserError) as exc:
        fn()
    return str(exc.value)


@pytest.fixture
def sample(tmp_path: Path) -> Repo:
    repo = Repo(copy_sample(tmp_path / "repo"), tmp_path)
    first = repo.warm()
    assert first.how == "full" and len(first.requested) > 10
    assert repo.warm().how == "cached"
    return repo


def test_sample_leaf_lib_and_service_edits(sample: Repo):
    # a module nothing imports at load time: only it runs again
    sample.edit("services/visualization/render.py", None, "\nRENDER_EDITED = 1\n")
    sample.check(requested={"services/visualization/render.py"})
    assert sample.warm().how == "cached"
    # a library one service uses
    sample.edit("libs/mlkit/serving.py", None, "\nSERVING_EDITED = True\n")
    sample.check(requested={"libs/mlkit/serving.py", "services/inference/tasks.py"})
    # a shared library: every module whose load reached it
    sample.edit("libs/common/text.py", None, "\nTEXT_EDITED = 1\n")
    inc = sample.check()
    assert "libs/common/text.py" in inc.requested
    assert "libs/mlkit/serving.py" not in inc.requested and "libs/mlkit/model.py" not in inc.requested
    # a service's declaration: what the env looks like changes
    sample.edit("services/inference/tasks.py", "inference_env = flyte.TaskEnvironment(",
                "INFERENCE_EDITED = 1\ninference_env = flyte.TaskEnvironment(")
    sample.check(requested={"services/inference/tasks.py"})


def test_sample_edit_that_keeps_the_code_reuses_the_result(sample: Repo):
    # a comment leaves every code object as it was: the result stands, nothing is imported
    sample.edit("libs/common/text.py", None, "\n# only a comment\n")
    sample.check(how="cutoff")
    assert sample.warm().how == "cached"
    # a module that reads its own text at import: its text may be in the result, so no cutoff
    render = "services/visualization/render.py"
    sample.edit(render, None, "\nSOURCE_SIZE = len(open(__file__).read())\n")
    sample.check(requested={render})
    sample.edit(render, None, "\n# a comment\n")
    sample.check(requested={render})
    # a code change after a cutoff: imported again, as after any edit
    sample.edit("libs/common/text.py", None, "\nTEXT_EDITED = 1\n")
    assert "libs/common/text.py" in sample.check().requested


def test_sample_rename_add_remove_env(sample: Repo):
    sample.edit("services/reporting/tasks.py", 'TaskEnvironment(\n    name="reporting"',
                'TaskEnvironment(\n    name="reporting_renamed"')
    inc = sample.check(requested={"services/reporting/tasks.py"})
    assert "reporting_renamed" in [e.name for e in inc.envs] and "reporting" not in [e.name for e in inc.envs]

    sample.edit("services/reporting/tasks.py", None,
                '\nextra_env = flyte.TaskEnvironment(name="reporting_extra", depends_on=[reporting_env])\n'
                '\n\n@extra_env.task\nasync def extra_task(x: int) -> int:\n    return x + 1\n')
    inc = sample.check(requested={"services/reporting/tasks.py"})
    assert inc.env("reporting_extra").depends_on == ("reporting_renamed",)

    # the clone in large.py goes away; ml_training stays. large.py imported
    # ml_training's and preprocessing's modules, so their envs come from this
    # run: everything that imports those runs again too
    (sample.root / "services/ml_training/large.py").write_text('"""No clone any more."""\n\nLARGE = 1\n')
    inc = sample.check(requested={"services/ml_training/large.py", "services/ml_training/tasks.py",
                                  "services/preprocessing/tasks.py", "services/visualization/tasks.py"})
    assert "ml_training_large" not in [e.name for e in inc.envs]
    assert {"ml_training", "preprocessing"} <= {e.name for e in inc.envs}


def test_sample_upstream_env_edit_reruns_dependents(sample: Repo):
    # envs depending on preprocessing (ml_training, its clone, visualization) hold
    # the preprocessing object: all of them are imported again, the rest are not
    sample.edit("services/preprocessing/tasks.py", "preprocessing_env = flyte.TaskEnvironment(",
                "PRE = 2\npreprocessing_env = flyte.TaskEnvironment(")
    sample.check(requested={"services/preprocessing/tasks.py", "services/ml_training/tasks.py",
                            "services/ml_training/large.py", "services/visualization/tasks.py"})


def test_sample_task_attached_from_another_module(sample: Repo):
    # a task added to preprocessing's env by another module: re-importing that
    # module re-creates preprocessing's env, so everything importing it runs too
    (sample.root / "services/preprocessing/more.py").write_text(
        "from services.preprocessing.tasks import preprocessing_env\n\n\n"
        "@preprocessing_env.task\nasync def more(x: int) -> int:\n    return x\n")
    assert sample.warm().how == "full"  # a new module: the candidates changed
    sample.edit("services/preprocessing/more.py", "async def more(", "async def more_renamed(")
    inc = sample.check()
    assert {"services/preprocessing/more.py", "services/ml_training/tasks.py"} <= set(inc.requested)
    assert "preprocessing.more_renamed" in [t.name for t in inc.env("preprocessing").tasks]
    assert "services/inference/tasks.py" not in inc.requested


def test_sample_dynamic_import_is_tracked(sample: Repo):
    # a module name in a variable: no parser sees it; the import hook does
    (sample.root / "libs/common/knobs.py").write_text("LEVEL = 'one'\n")
    sample.edit("services/inference/tasks.py", "inference_env = flyte.TaskEnvironment(",
                "import importlib as _il\n_name = 'libs.common.' + 'knobs'\n"
                "KNOB = _il.import_module(_name).LEVEL\ninference_env = flyte.TaskEnvironment(")
    sample.edit("services/inference/tasks.py", "env_vars={", 'env_vars={"KNOB": KNOB, ')
    first = sample.warm()
    assert first.how == "full" and first.env("inference").env_vars["KNOB"] == "one"
    (sample.root / "libs/common/knobs.py").write_text("LEVEL = 'two'\n")
    inc = sample.check(requested={"libs/common/knobs.py", "services/inference/tasks.py"})
    assert inc.env("inference").env_vars["KNOB"] == "two"


def test_sample_errors_are_the_full_ones(sample: Repo):
    sample.edit("libs/common/text.py", None, "\ndef broken(:\n    pass\n")
    warm_err = _error(sample.warm)
    assert "libs/common/text.py" in warm_err and "SyntaxError" in warm_err
    assert warm_err == _error(sample.full)
    sample.edit("libs/common/text.py", "\ndef broken(:\n    pass\n", "\n")
    sample.check(how="cutoff")  # the code last imported, one blank line more

    # an exception at import time
    sample.edit("libs/mlkit/serving.py", None, "\nraise RuntimeError('config missing')\n")
    warm_err = _error(sample.warm)
    assert warm_err == _error(sample.full) and "RuntimeError: config missing" in warm_err
    sample.edit("libs/mlkit/serving.py", "\nraise RuntimeError('config missing')\n", "\n")
    sample.check(how="cutoff")

    # two environments with one name, in an edited and an untouched module
    sample.edit("services/inference/tasks.py", 'name="inference"', 'name="reporting"')
    warm_err = _error(sample.warm)
    assert warm_err == _error(sample.full) and "`reporting`" in warm_err
    sample.edit("services/inference/tasks.py", 'name="reporting"', 'name="inference"')
    sample.check(how="cached")  # the bytes the cache was last written for: errors are never cached

    # a depends_on to an environment of another module
    sample.edit("services/inference/tasks.py", "from libs.mlkit import serving\n",
                "from libs.mlkit import serving\nfrom services.reporting.tasks import reporting_env\n")
    sample.edit("services/inference/tasks.py", "inference_env = flyte.TaskEnvironment(\n",
                "inference_env = flyte.TaskEnvironment(\n    depends_on=[reporting_env],\n")
    inc = sample.check()
    assert inc.env("inference").depends_on == ("reporting",)


def test_sample_init_added_to_a_namespace_package_with_another_edit(sample: Repo):
    (sample.root / "libs/nsx").mkdir()
    (sample.root / "libs/nsx/helper.py").write_text("H = 1\n")
    sample.edit("services/visualization/render.py", None, "\nimport libs.nsx.helper\n")
    inc = sample.check(how="full")  # a new candidate module
    assert "libs/nsx/helper.py" in inc.loaded_files and "libs/nsx/__init__.py" not in inc.loaded_files
    # with another module's edit beside it, the graph would redo only that module's importers
    (sample.root / "libs/nsx/__init__.py").write_text("import os\nNSX = os.sep\n")
    sample.edit("libs/mlkit/serving.py", None, "\nSERVING_EDITED = True\n")
    assert "libs/nsx/__init__.py" in sample.check(how="full").loaded_files
    assert sample.warm().how == "cached"
    (sample.root / "libs/nsx/__init__.py").unlink()
    assert "libs/nsx/__init__.py" not in sample.check(how="full").loaded_files


def test_sample_file_selection_stays_full(sample: Repo):
    sel = Selection(paths=(str(sample.root / "services/inference/tasks.py"),))
    assert sample.warm(sel).how == "full"
    sample.edit("services/inference/tasks.py", None, "\nEDITED = 1\n")
    assert sample.warm(sel).how == "full"
    assert sample.warm(sel).how == "cached"
    sample.edit("services/inference/tasks.py", None, "\n# edited\n")
    assert sample.warm(sel).how == "cutoff"  # the same code: the file's result stands


def test_sample_build_after_edit_matches_fresh_build(sample: Repo, tmp_path: Path):
    cache = tmp_path / "cli"
    build_json(sample.root, cache)
    sample.edit("libs/mlkit/serving.py", None, "\n# edited\n")
    sample.edit("services/reporting/tasks.py", 'TaskEnvironment(\n    name="reporting"',
                'TaskEnvironment(\n    name="reporting2"')
    warm = build_json(sample.root, cache)
    fresh = build_json(sample.root, tmp_path / "cli-fresh")
    assert {t["target"]: t["digest"] for t in warm["targets"]} == {t["target"]: t["digest"] for t in fresh["targets"]}
    assert warm["discovery"]["envs"] == fresh["discovery"]["envs"]


@pytest.fixture
def generated(tmp_path: Path) -> Repo:
    root = tmp_path / "gen"
    generate(root, Shape(envs=10, files=300))
    repo = Repo(root, tmp_path)
    assert repo.warm().how == "full"
    return repo


def _chain_tasks(svc: int) -> set[str]:
    head = svc - svc % 5
    return {f"services/svc_{i:03d}/tasks.py" for i in range(head, head + 5)}


def test_generated_service_lib_and_env_edits(generated: Repo):
    svc_mod = "services/svc_007/mod_001.py"
    generated.edit(svc_mod, None, "\n\ndef added() -> int:\n    return 1\n")
    # the edited module, and the envs of its depends_on chain (svc_005..009)
    generated.check(requested={svc_mod} | _chain_tasks(7))

    # a library module: every service whose load reached it, nothing else
    lib = "libs/lib_001/m_000.py"
    importers = {str(p.relative_to(generated.root)) for p in generated.root.glob("**/*.py")
                 if re.search(r"lib_001 import m_000\b", p.read_text())}
    generated.edit(lib, None, "\nEDITED = 1\n")
    inc = generated.check()
    assert lib in inc.requested and importers <= set(inc.requested)
    assert len(inc.requested) < len(generated.entry(generated.cache)["candidates"]) / 2

    # rename an env; its dependent in the chain follows the new name
    generated.edit("services/svc_002/tasks.py", 'name="svc_002"', 'name="svc_002_renamed"')
    inc = generated.check(requested=_chain_tasks(2))
    assert inc.env("svc_003").depends_on == ("svc_002_renamed",)

    # add an env, then remove it
    generated.edit("services/svc_009/tasks.py", None, '\nextra = flyte.TaskEnvironment(name="svc_009_extra")\n')
    inc = generated.check(requested=_chain_tasks(9))
    assert "svc_009_extra" in [e.name for e in inc.envs]
    generated.edit("services/svc_009/tasks.py", '\nextra = flyte.TaskEnvironment(name="svc_009_extra")\n', "\n")
    inc = generated.check(requested=_chain_tasks(9))
    assert "svc_009_extra" not in [e.name for e in inc.envs]

    # a syntax error: the same message as a full discovery
    generated.edit(svc_mod, None, "\ndef broken(:\n")
    warm_err = _error(generated.warm)
    assert warm_err == _error(generated.full) and f"{svc_mod}:" in warm_err and "SyntaxError" in warm_err
    generated.edit(svc_mod, "\ndef broken(:\n", "\n")
    generated.check(how="cutoff")  # the code last imported, one blank line more
    assert generated.warm().how == "cached"
