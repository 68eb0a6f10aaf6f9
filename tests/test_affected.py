"""`flyte-build affected --since REV` and `build --changed-since REV` on a real git repository.

Each test edits a fresh reset of one git repository holding sample_monorepo
(committed as `base`), then asks what is affected since `base`. A test names
the targets the change reaches *directly* and the file that made each
affected; every target depending on one of them (deploys on bundles and
images, deploys on the deploys of `depends_on`) must follow, and nothing
else.
"""

from __future__ import annotations

import pytest

from tests.support.gitrepo import GitRepo


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("affected")
    # local commands on one tree: in-process runs (tests/support/cli.py) save a start and the imports each
    return GitRepo.create(base / "repo", base / "cache", in_process=True)


@pytest.fixture(scope="module")
def base_edges(shared_repo):
    return graph_edges(shared_repo)


@pytest.fixture
def repo(shared_repo):
    shared_repo.reset()
    return shared_repo


def graph_edges(repo: GitRepo) -> dict[str, set[str]]:
    run = repo.run("graph", "--format", "json")
    assert run.rc == 0, run.err
    return {t["target"]: set(t["deps"]) for t in run.json()["targets"]}


def affected(repo: GitRepo, since: str = "base") -> dict:
    run = repo.run("affected", "--since", since, "--json")
    assert run.rc == 0, f"rc={run.rc}\n{run.out}\n{run.err}"
    return run.json()


def dependents_closure(edges: dict[str, set[str]], direct: set[str]) -> set[str]:
    out = set(direct)
    grew = True
    while grew:
        grew = False
        for addr, deps in edges.items():
            if addr not in out and deps & out:
                out.add(addr)
                grew = True
    return out


def check(doc: dict, edges: dict[str, set[str]], direct: dict[str, str]) -> None:
    """`direct`: address -> the file that must be named; each must be a target of the graph."""
    missing = set(direct) - set(edges)
    assert not missing, f"expected targets absent from the graph: {sorted(missing)}"
    want_direct = dict(direct)
    got_direct = {t["target"]: t["file"] for t in doc["targets"] if t["reason"] != "dependency"}
    assert got_direct == want_direct, doc["targets"]
    assert {t["target"] for t in doc["targets"]} == dependents_closure(edges, set(want_direct))
    for t in doc["targets"]:
        if t["reason"] == "dependency":
            assert t["file"] in want_direct.values() and t["via"] in {x["target"] for x in doc["targets"]}
    # the env view and the CI matrix list the same environments
    envs = sorted({t["env"] for t in doc["targets"]})
    assert sorted(e["env"] for e in doc["envs"]) == envs
    assert sorted(m["env"] for m in doc["matrix"]["include"]) == envs


LOADED = ("inference", "ml_training", "ml_training_large", "preprocessing", "visualization")


def test_shared_library_edit_affects_every_importer_and_none_else(repo, base_edges):
    # model.py is imported by ml_training (and so its clone and visualization)
    # and by serving.py (inference); preprocessing never imports it
    repo.append("libs/mlkit/model.py", "\n# tuned\n")
    doc = affected(repo)
    f = "libs/mlkit/model.py"
    check(doc, base_edges, {**{f"bundle:{e}": f for e in ("inference", "ml_training", "ml_training_large", "visualization", "reporting")},
                            # the serialized specs of the envs whose import closure has it
                            **{f"specs:{e}": f for e in ("inference", "ml_training", "ml_training_large", "visualization")}})
    assert doc["changed_files"] == [{"path": f, "status": "modified"}]
    assert not any(t["env"] == "preprocessing" for t in doc["targets"])


def test_commits_and_working_tree_both_count(repo, base_edges):
    repo.append("libs/mlkit/serving.py", "\n# committed\n")
    repo.commit("serving")
    repo.append("services/preprocessing/tasks.py", "\n# not committed yet\n")
    doc = affected(repo)
    pre = "services/preprocessing/tasks.py"
    # ml_training(_large) and visualization import preprocessing's module
    check(doc, base_edges, {
        "bundle:inference": "libs/mlkit/serving.py",
        "bundle:reporting": "libs/mlkit/serving.py",
        **{f"bundle:{e}": pre for e in ("preprocessing", "ml_training", "ml_training_large", "visualization")},
        "specs:inference": "libs/mlkit/serving.py",
        **{f"specs:{e}": pre for e in ("preprocessing", "ml_training", "ml_training_large", "visualization")},
    })


def test_data_file_read_only_by_a_copy_style_all_env(repo, base_edges):
    repo.replace("services/reporting/config/report.json", '"precision"', '"precision" ')
    doc = affected(repo)
    # .dockerignore keeps config/ out of the reporting image's build context
    check(doc, base_edges, {"bundle:reporting": "services/reporting/config/report.json"})


def test_dockerfile_context_file(repo, base_edges):
    repo.append("services/reporting/requirements.txt", "\n# pinned again\n")
    doc = affected(repo)
    f = "services/reporting/requirements.txt"
    check(doc, base_edges, {"bundle:reporting": f, "image:reporting": f})


def test_file_left_out_of_the_docker_context_does_not_touch_the_image(repo, base_edges):
    f = "services/reporting/config/report.json"  # .dockerignore: config/; read at run time
    repo.append(f, "\n")
    doc = affected(repo)
    check(doc, base_edges, {"bundle:reporting": f})


def test_log_file_reaches_no_target(repo, base_edges):
    # *.log is among flyte's standard ignores (so not in the copy-style all
    # bundle) and in reporting's .dockerignore (so not in its build context)
    repo.append("services/reporting/debug.log", "another line\n")
    doc = affected(repo)
    assert doc["targets"] == [] and doc["envs"] == [], doc["targets"]


def test_image_source_folder_file(repo, base_edges):
    repo.append("services/visualization/assets/palette.txt", "\n")
    doc = affected(repo)
    f = "services/visualization/assets/palette.txt"
    # not a module: only the copy-style-all bundle and the image baking the folder read it
    check(doc, base_edges, {"bundle:reporting": f, "image:visualization": f})


def test_deleted_module_affects_the_targets_that_read_it_at_the_revision(repo, base_edges):
    repo.delete("libs/common/unused.py")  # imported by nobody: only reporting's all-bundle had it
    repo.commit("drop unused")
    doc = affected(repo)
    check(doc, base_edges, {"bundle:reporting": "libs/common/unused.py"})
    (rec,) = [t for t in doc["targets"] if t["target"] == "bundle:reporting"]
    assert rec["change"] == "deleted"


def test_deleted_lazily_imported_module(repo, base_edges):
    # render.py is imported inside a task body only; nothing else changes
    repo.delete("services/visualization/render.py")
    doc = affected(repo)
    f = "services/visualization/render.py"
    check(doc, base_edges, {"bundle:visualization": f, "bundle:reporting": f, "specs:visualization": f})


def test_new_module_not_yet_added_to_git(repo, base_edges):
    repo.write("libs/common/fresh.py", "X = 1\n")
    doc = affected(repo)
    check(doc, base_edges, {"bundle:reporting": "libs/common/fresh.py"})
    assert doc["changed_files"] == [{"path": "libs/common/fresh.py", "status": "added"}]


def test_new_module_imported_by_a_library(repo, base_edges):
    repo.write("libs/mlkit/extra.py", "SCALE = 2.0\n")
    repo.replace("libs/mlkit/serving.py", "import os\n", "import os\n\nfrom libs.mlkit import extra  # noqa: F401\n")
    doc = affected(repo)
    new = "libs/mlkit/extra.py"
    check(doc, base_edges, {"bundle:inference": new, "bundle:reporting": new, "specs:inference": new})
    (rec,) = [t for t in doc["targets"] if t["target"] == "bundle:inference"]
    assert rec["files"] == [new, "libs/mlkit/serving.py"] and rec["change"] == "added"


def test_renamed_file(repo, base_edges):
    repo.move("libs/common/unused.py", "libs/common/spare.py")
    doc = affected(repo)
    check(doc, base_edges, {"bundle:reporting": "libs/common/spare.py"})
    assert doc["changed_files"] == [{"path": "libs/common/spare.py", "status": "renamed", "old_path": "libs/common/unused.py"}]


def test_renamed_env(repo, base_edges):
    repo.replace("services/inference/tasks.py", 'name="inference"', 'name="inference_v2"')
    repo.commit("rename inference")
    doc = affected(repo)
    edges = graph_edges(repo)
    f = "services/inference/tasks.py"
    new = {a: f for a in edges if a.endswith(":inference_v2")}
    assert new, edges
    # every task's image cache names every env: the other envs' specs change too
    # (a changed parameter names the env's own file)
    others = {"specs:ml_training": "services/ml_training/tasks.py", "specs:ml_training_large": "services/ml_training/large.py",
              "specs:preprocessing": "services/preprocessing/tasks.py", "specs:reporting": "services/reporting/tasks.py",
              "specs:visualization": "services/visualization/tasks.py"}
    check(doc, edges, {**new, "bundle:reporting": f, **others})
    assert {t["reason"] for t in doc["targets"] if t["env"] == "inference_v2"} == {"new"}
    assert doc["removed"]["envs"] == ["inference"]
    assert doc["removed"]["targets"] == sorted(a for a in base_edges if a.endswith(":inference"))


def test_config_change_in_the_flyte_table(repo, base_edges):
    repo.append("pyproject.toml", '\n[tool.hatch.build.targets.flyte.envs.preprocessing]\ncopy-style = "all"\n')
    doc = affected(repo)
    # preprocessing now ships the whole tree (pyproject.toml included); reporting always did
    check(doc, base_edges, {"bundle:preprocessing": "pyproject.toml", "bundle:reporting": "pyproject.toml",
                            "specs:preprocessing": "pyproject.toml"})


def test_config_include_override(repo, base_edges):
    repo.append("pyproject.toml", '\n[tool.hatch.build.targets.flyte.envs.inference]\ninclude = ["services/reporting/config/report.json"]\n')
    doc = affected(repo)
    (rec,) = [t for t in doc["targets"] if t["target"] == "bundle:inference"]
    assert rec["reason"] == "inputs-added" and rec["file"] == "pyproject.toml"
    assert rec["files"] == ["services/reporting/config/report.json"]
    check(doc, base_edges, {"bundle:inference": "pyproject.toml", "bundle:reporting": "pyproject.toml"})


def test_pyproject_change_outside_the_flyte_table(repo, base_edges):
    repo.replace("pyproject.toml", 'version = "0.3.0"', 'version = "0.3.1"')
    doc = affected(repo)
    # only a bundle that ships pyproject.toml itself reads it
    check(doc, base_edges, {"bundle:reporting": "pyproject.toml"})


def test_image_ref_change_in_config_affects_what_resolves_it(repo, base_edges):
    repo.replace("pyproject.toml", "runtime:py3.11", "runtime:py3.12")
    doc = affected(repo)
    got = {t["target"]: t for t in doc["targets"]}
    assert "bundle:inference" not in got and "bundle:preprocessing" not in got
    assert got["bundle:reporting"]["file"] == "pyproject.toml"
    for addr in ("image:inference", "deploy:inference"):
        assert addr in base_edges, sorted(base_edges)
        assert addr in got and got[addr]["file"] == "pyproject.toml", doc["targets"]


def test_gitignore_edit(repo, base_edges):
    repo.append(".gitignore", "*.log\n")  # drops services/reporting/debug.log from the all-bundle
    doc = affected(repo)
    check(doc, base_edges, {"bundle:reporting": ".gitignore"})


def test_flyteignore_edit(repo, base_edges):
    repo.write(".flyteignore", "# notebooks ship now\n")
    doc = affected(repo)
    check(doc, base_edges, {"bundle:reporting": ".flyteignore"})


def test_nested_ignore_file_that_no_bundle_reads(repo, base_edges):
    # a new .gitignore under libs/common hiding unused.py from the walk: the
    # ignore file itself is new (an input of the all-bundle), unused.py is lost
    repo.write("libs/common/.gitignore", "unused.py\n")
    doc = affected(repo)
    check(doc, base_edges, {"bundle:reporting": "libs/common/.gitignore"})


def test_dockerignore_edit(repo, base_edges):
    repo.replace("services/reporting/.dockerignore", "*.log\n", "")  # debug.log joins the context
    doc = affected(repo)
    f = "services/reporting/.dockerignore"
    check(doc, base_edges, {"bundle:reporting": f, "image:reporting": f})


def test_file_no_target_reads(repo, base_edges):
    repo.append("notebooks/explore.ipynb", "\n")  # .flyteignore'd, imported by nothing
    doc = affected(repo)
    assert doc["targets"] == [] and doc["envs"] == [] and doc["matrix"] == {"include": []}
    assert doc["changed_files"] == [{"path": "notebooks/explore.ipynb", "status": "modified"}]
    text = repo.run("affected", "--since", "base")
    assert text.rc == 0 and "nothing affected" in text.out


def test_nothing_changed(repo):
    doc = affected(repo)
    assert doc["targets"] == [] and doc["changed_files"] == []


def test_unknown_revision_is_a_usage_error(repo):
    run = repo.run("affected", "--since", "no-such-branch")
    assert run.rc == 2, run.err
    assert "no-such-branch" in run.err and "Traceback" not in run.err


def test_build_changed_since_builds_exactly_the_affected_bundles(repo):
    repo.append("libs/mlkit/serving.py", "\n# faster\n")
    run = repo.run("build", "--changed-since", "base", "--json")
    assert run.rc == 0, run.err
    doc = run.json()
    assert [t["target"] for t in doc["targets"]] == ["bundle:inference", "bundle:reporting"]
    assert all(t["status"] in ("built", "cached") for t in doc["targets"])


def test_build_changed_since_with_nothing_affected(repo):
    repo.append("notebooks/explore.ipynb", "\n")
    run = repo.run("build", "--changed-since", "base", "--json")
    assert run.rc == 0, run.err
    assert run.json()["targets"] == []


def test_deploy_changed_since_plans_exactly_the_affected_envs(repo):
    # model.py reaches inference, ml_training (+ its clone), reporting (copy
    # style all) and visualization; ml_training(_large) depend on
    # preprocessing, which is unaffected: left out of the plan, not redeployed
    repo.append("libs/mlkit/model.py", "\n# tuned\n")
    run = repo.run("deploy", "--dry-run", "--json", "--changed-since", "base")
    assert run.rc == 0, run.err
    doc = run.json()
    assert doc["order"] == ["inference", "ml_training", "ml_training_large", "reporting", "visualization"]
    assert doc["waves"] == [["inference", "ml_training", "ml_training_large", "reporting"], ["visualization"]]
    assert doc["left_out"] == ["preprocessing"]
    assert [t["env"] for t in doc["targets"]] == doc["order"]
    # the left-out dependency still pins its image into its dependents, so
    # their versions are the ones a full deploy would give them
    full = repo.run("deploy", "--dry-run", "--json")
    assert full.rc == 0, full.err
    want = {t["env"]: t for t in full.json()["targets"]}
    for t in doc["targets"]:
        assert (t["version"], t["images"]) == (want[t["env"]]["version"], want[t["env"]]["images"]), t["env"]
    assert "preprocessing" in {e for t in doc["targets"] for e in t["images"]}
    text = repo.run("deploy", "--dry-run", "--changed-since", "base")
    assert text.rc == 0, text.err
    assert "left out, unaffected since base (not redeployed; must already be deployed): preprocessing" in text.out
