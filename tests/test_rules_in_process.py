"""A rule run through the engine in this process, without the CLI.

The bundle rule on a copy of sample_monorepo: its declared inputs, the action
key the engine computes from them, and the bytes `run` writes, step by step.
The key and the bytes must equal the recorded set of test_recorded_digests (the
CLI's answer for the same tree), so the in-process path and the command agree;
and running the rule again, in another work directory, gives the same bytes
from the declared files alone (a rule is a function of its request).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from tests.support.cli import copy_sample

pytestmark = pytest.mark.timeout(180)

RECORDED = json.loads((Path(__file__).parent / "data" / "sample_monorepo_digests.json").read_text())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from flyte_build.workspace import Settings, Workspace

    root = tmp_path_factory.mktemp("rules-in-process")
    repo = copy_sample(root / "repo")
    # discovery still runs in its child process; everything after it runs here
    return Workspace(Settings(root_dir=str(repo), cache_dir=str(root / "cache")))


def _run_bundle_rule(ws, address: str, workdir: Path):
    from flyte_build.hashing import key_of
    from flyte_build.rule_api import Request

    engine = ws.engine()
    target = ws.graph.targets[address]
    rule = ws.graph.rules[target.kind]
    doc, files, params = engine.key_document(target, {})
    workdir.mkdir()
    request = dict(target=address, env=ws.ctx.env(target.env), files=files, params=params, deps={}, workdir=workdir,
                   log=lambda line: None)
    if "ctx" in {f.name for f in dataclasses.fields(Request)}:  # the rule API before rules lost the whole Context
        request["ctx"] = ws.ctx
    produced = rule.run(Request(**request))
    return key_of(doc), files, produced


@pytest.mark.parametrize("address", ["bundle:inference", "bundle:reporting"])
def test_bundle_rule_inputs_key_and_bytes(workspace, tmp_path, address):
    key, files, produced = _run_bundle_rule(workspace, address, tmp_path / "one")
    assert key == RECORDED["keys"][address], "the engine's key in-process differs from the CLI's recorded key"
    ((name, path),) = produced.files
    assert name == "bundle.tar.gz" and Path(path).parent == tmp_path / "one"  # written in its work directory only
    data = Path(path).read_bytes()
    assert f"sha256:{hashlib.sha256(data).hexdigest()}" == RECORDED["bundles"][address]
    # the archive holds exactly the declared files, under their declared names
    with tarfile.open(path) as tar:
        members = {m.name for m in tar.getmembers() if m.isfile()}
    assert members == {f.name for f in files} and produced.meta["files"] == len(files)
    # again, elsewhere: the same bytes
    _, _, again = _run_bundle_rule(workspace, address, tmp_path / "two")
    assert Path(again.files[0][1]).read_bytes() == data


def test_bundle_inputs_are_the_envs_import_closure_with_their_digests(workspace):
    from flyte_build.rule_api import Inputs

    env = workspace.ctx.env("inference")
    rule = workspace.graph.rules["bundle"]
    # a rule's inputs see a read-only view of the run where the API has one
    inputs = rule.inputs(env, workspace.ctx.view)
    assert isinstance(inputs, Inputs) and inputs.deps == ()
    assert inputs.params == {"copy_style": "loaded_modules", "format": "tar.gz/2"}
    names = dict(inputs.files)
    assert {"services/inference/tasks.py", "libs/mlkit/model.py", "libs/common/stats.py"} <= set(names)
    assert not [n for n in names if n.startswith(("services/reporting/", "services/visualization/"))]
    _, files, _ = workspace.engine().key_document(workspace.graph.targets["bundle:inference"], {})
    for f in files:
        assert f.digest == hashlib.sha256(Path(f.path).read_bytes()).hexdigest(), f.name
