"""`affected --since` on the ordinary shape of a company repository: the Flyte
project in `ml/` of a larger git repository (beside `web/` and `docs/`), with
the clutter of a working tree that git ignores (`.venv/`, `dist/`, `__pycache__/`,
logs) and flyte's config in an ignored `.flyte/config.yaml` at the git root,
which the modules' flyte lookup finds there.

The revision is evaluated in an export of `ml/` that has none of that clutter;
what the modules read at import must still compare equal on both sides, so
each change reaches exactly the environments that read what it changed.
"""

from __future__ import annotations

import json

import pytest

from tests.support.gitrepo import GitRepo
from tests.support.repos import env_module
from tests.test_affected import check, graph_edges

SHARED = [f"e{i:02d}" for i in range(10)]  # import libs/shared.py
OTHER = [f"e{i:02d}" for i in range(10, 20)]  # import libs/other.py
ENVS = [*SHARED, *OTHER, "e20", "e21"]  # e03 also imports libs/solo.py; e20 reads data/settings.json
LIMITS = ["e10", "e11"]  # call libs/loader.py's cached reader of data/limits.json at import
# e21 lists libs/ at import (a plugin folder): the working tree's libs/__pycache__/ is no change
LISTS_LIBS = """
import os as _os
PLUGINS = sorted(_os.listdir(_os.path.join(_os.path.dirname(_os.path.dirname(__file__)), "libs")))
"""

READS_SETTINGS = """
import json as _json
from pathlib import Path as _Path
SETTINGS = _json.loads((_Path(__file__).resolve().parents[1] / "data" / "settings.json").read_text())
"""

# the second env to call it reads nothing (the cache answers): the read is the loader's, in both closures
LOADER = """
import functools
import json
from pathlib import Path


@functools.lru_cache(maxsize=None)
def limits():
    return json.loads((Path(__file__).resolve().parents[1] / "data" / "limits.json").read_text())
"""


def _files() -> dict[str, str]:
    files = {
        ".gitignore": ".venv/\ndist/\n__pycache__/\n.flyte/\n*.log\n",
        "web/index.html": "<h1>shop</h1>\n",
        "docs/guide.md": "# guide\n",
        "ml/pyproject.toml": '[project]\nname = "ml"\nversion = "0.1.0"\n\n[tool.hatch.build.targets.flyte]\ncopy-style = "loaded_modules"\n',
        "ml/libs/__init__.py": "",
        "ml/libs/shared.py": "SHARED = 1\n",
        "ml/libs/other.py": "OTHER = 2\n",
        "ml/libs/solo.py": "SOLO = 3\n",
        "ml/data/settings.json": '{"memory": "1Gi"}\n',
        "ml/data/limits.json": '{"cpu": 2}\n',
        "ml/libs/loader.py": LOADER,
        "ml/envs/__init__.py": "",
    }
    for e in ENVS:
        imports = "from libs.shared import SHARED" if e in SHARED else "from libs.other import OTHER" if e in OTHER else ""
        if e == "e03":
            imports += "\nfrom libs.solo import SOLO"
        body = READS_SETTINGS if e == "e20" else LISTS_LIBS if e == "e21" else ""
        if e in LIMITS:
            imports += "\nfrom libs.loader import limits"
            body = "LIMITS = limits()\n"
        files[f"ml/envs/{e}.py"] = env_module(e, imports=imports, body=body)
    return files


def _clutter(repo: GitRepo) -> None:
    """What a developer's working tree has and git ignores."""
    repo.write(".flyte/config.yaml", "admin:\n  endpoint: dns:///flyte.example.com\ntask:\n  project: shop\n  domain: development\n")
    repo.write("ml/.flyte/config.yaml", "task:\n  project: ml\n  domain: development\n")  # the project's own, ignored too
    repo.write("ml/.venv/lib/python3.11/site-packages/tabulate.py", "VERSION = 1\n")
    repo.write("ml/dist/flyte/manifest.json", "{}\n")
    repo.write("ml/libs/__pycache__/shared.cpython-311.pyc", "not really bytecode\n")
    repo.write("ml/build.log", "old log\n")


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("affected-subfolder")
    repo = GitRepo.create_tree(base / "company", base / "cache", _files(), project="ml", in_process=True)
    _clutter(repo)
    return repo


@pytest.fixture(scope="module")
def edges(shared_repo):
    return graph_edges(shared_repo)


@pytest.fixture
def repo(shared_repo):
    shared_repo.reset()
    _clutter(shared_repo)
    return shared_repo


def affected(repo: GitRepo) -> dict:
    run = repo.run("affected", "--since", "base", "--json")
    assert run.rc == 0, f"rc={run.rc}\n{run.out}\n{run.err}"
    return run.json()


def test_the_project_has_every_env(repo, edges):
    assert sorted(a.split(":", 1)[1] for a in edges if a.startswith("bundle:")) == ENVS


def test_working_tree_clutter_and_a_change_outside_the_project_affect_nothing(repo):
    repo.append("web/index.html", "<p>sale</p>\n")
    repo.write("docs/new.md", "# new\n")
    repo.write("ml/.venv/lib/python3.11/site-packages/humanize.py", "X = 1\n")  # ignored
    repo.append("ml/build.log", "another run\n")  # ignored
    repo.append(".flyte/config.yaml", "# a local edit\n")  # ignored, flyte's config on both sides
    repo.append("ml/.flyte/config.yaml", "# a local edit\n")
    doc = affected(repo)
    assert doc["targets"] == [] and doc["changed_files"] == []
    assert doc["matrix"] == {"include": []}
    text = repo.run("affected", "--since", "base")
    assert text.rc == 0 and text.out.strip() == "nothing affected since base (0 changed file(s))", text.out


def test_one_module_affects_its_env_only(repo, edges):
    repo.append("ml/envs/e21.py", "\n# tuned\n")
    check(affected(repo), edges, {"bundle:e21": "envs/e21.py", "specs:e21": "envs/e21.py"})


def test_shared_module_affects_exactly_its_importers(repo, edges):
    repo.append("ml/libs/shared.py", "MORE = 2\n")
    doc = affected(repo)
    check(doc, edges, {f"{k}:{e}": "libs/shared.py" for e in SHARED for k in ("bundle", "specs")})
    assert sorted(m["env"] for m in doc["matrix"]["include"]) == SHARED


def test_module_of_one_env_committed(repo, edges):
    repo.append("ml/libs/solo.py", "SOLO_TOO = 4\n")
    repo.commit("solo")
    check(affected(repo), edges, {"bundle:e03": "libs/solo.py", "specs:e03": "libs/solo.py"})


def test_data_file_read_at_import_affects_the_env_that_read_it(repo, edges):
    repo.write("ml/data/settings.json", '{"memory": "2Gi"}\n')
    doc = affected(repo)
    got = {t["target"]: t for t in doc["targets"] if t["reason"] != "dependency"}
    # no bundle ships the data file (loaded_modules); the specs of the one env whose discovery read it change
    assert set(got) == {"specs:e20"}, doc["targets"]
    assert got["specs:e20"]["detail"] == "changed: witness"
    assert {t["env"] for t in doc["targets"]} == {"e20"}


def test_data_file_read_by_a_shared_helper_affects_the_envs_using_it(repo, edges):
    repo.write("ml/data/limits.json", '{"cpu": 4}\n')
    doc = affected(repo)
    got = {t["target"] for t in doc["targets"] if t["reason"] != "dependency"}
    assert got == {f"specs:{e}" for e in LIMITS}, doc["targets"]


def test_a_new_file_in_a_listed_folder_affects_the_env_that_listed_it(repo, edges):
    repo.write("ml/libs/extra.py", "EXTRA = 1\n")  # imported by nobody; e21's listing of libs/ sees it
    doc = affected(repo)
    got = {t["target"] for t in doc["targets"] if t["reason"] != "dependency"}
    assert got == {"specs:e21"}, doc["targets"]


def test_pyproject_outside_and_inside_the_flyte_table(repo, edges):
    repo.replace("ml/pyproject.toml", 'version = "0.1.0"', 'version = "0.1.1"')
    assert affected(repo)["targets"] == []  # no bundle ships pyproject.toml, no setting changed
    repo.append("ml/pyproject.toml", '\n[tool.hatch.build.targets.flyte.envs.e07]\ncopy-style = "all"\n')
    doc = affected(repo)
    direct = {t["target"]: t for t in doc["targets"] if t["reason"] != "dependency"}
    # the env's copy style is in its bundle's inputs and in its serialization request
    assert set(direct) == {"bundle:e07", "specs:e07"}, doc["targets"]
    assert {t["file"] for t in direct.values()} == {"pyproject.toml"}
    assert {t["env"] for t in doc["targets"]} == {"e07"}


def test_json_and_text_agree_on_a_two_file_change(repo, edges):
    repo.append("ml/libs/other.py", "OTHER_TOO = 5\n")
    repo.append("ml/envs/e00.py", "\n# e00 only\n")
    doc = affected(repo)
    check(doc, edges, {**{f"{k}:{e}": "libs/other.py" for e in OTHER for k in ("bundle", "specs")},
                       "bundle:e00": "envs/e00.py", "specs:e00": "envs/e00.py"})
    text = repo.run("affected", "--since", "base")
    assert text.rc == 0
    assert sorted(line.split("\t")[0] for line in text.out.splitlines()) == sorted(t["target"] for t in doc["targets"])
    json.dumps(doc)  # plain JSON
