"""Each target's inputs are asked of its rule once per run: `targets` and
`explain` walk the dependencies of every target they report on, and used to
recompute a dependency's inputs (and key) once for every target above it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.support.cli import flyte_build
from tests.support.repos import env_module, make_repo

# A repository rule set of two kinds, `leaf` and `top` (which depends on the
# env's leaf); each inputs() call appends its target to a file the test counts.
RULES = '''\
import os
from flyte_build.rule_api import Inputs, Produced, Rule

def _counted(kind, deps):
    def inputs(env, ctx):
        with open(os.environ["COUNT_FILE"], "a") as f:
            f.write(f"{kind}:{env.name}\\n")
        return Inputs(params={"kind": kind}, deps=deps(env))

    def run(req):
        out = req.workdir / "out.txt"
        out.write_text(kind)
        return Produced(files=(("out.txt", out),))

    return Rule(kind=kind, version="1", description=kind, inputs=inputs, run=run,
                deps=lambda env, ctx: deps(env))

def rules():
    return [_counted("leaf", lambda env: ()), _counted("top", lambda env: (f"leaf:{env.name}",))]
'''


@pytest.mark.timeout(180)
def test_targets_and_explain_ask_each_rule_for_inputs_once(tmp_path: Path):
    files = {"pkg/__init__.py": "", "myrules/register.py": RULES}
    for name in ("a", "b", "c"):
        files[f"pkg/{name}.py"] = env_module(name, var=f"env_{name}")
    root = make_repo(tmp_path / "repo", files, pyproject_extra='rules = ["myrules"]')
    count = tmp_path / "count.txt"

    def calls(*args: str) -> Counter:
        count.write_text("")
        flyte_build(*args, cwd=root, cache=tmp_path / "cache", env={"COUNT_FILE": str(count)}).assert_ok()
        return Counter(count.read_text().split())

    # before this run's memo: leaf:<env> twice (for itself and under top:<env>)
    listed = calls("targets", "--json")
    assert listed == Counter({f"{k}:{e}": 1 for k in ("leaf", "top") for e in "abc"})

    built = calls("build", "top:*", "leaf:*")
    assert built == Counter({f"{k}:{e}": 1 for k in ("leaf", "top") for e in "abc"})

    assert calls("explain", "top:a") == Counter({"leaf:a": 1, "top:a": 1})
