"""A rule's `deliver` step and per-run `session` (rule_api), as a repository's own rule set uses them.

`stamp:<env>` writes a file (its cacheable action) and "publishes" it outside
the cache in `deliver` (a copy into a directory standing for a registry);
`after:<env>` depends on it. What a user of the rule API is promised: the
step runs on every build, hits included, and its fields reach the record;
the digest it returns is the one dependents are keyed by, and it is never
stored (a new answer changes the dependents, not the cached action); the
session is made once per run, shared by the kind's targets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import copy_sample, flyte_build

pytestmark = pytest.mark.timeout(300)

TABLE = "[tool.hatch.build.targets.flyte]\n"
RULES = '''
import hashlib
import os
from pathlib import Path

from flyte_build.rule_api import Inputs, Produced, Rule

OUT = Path(os.environ["FB_TEST_OUTSIDE"])


def session():
    with open(OUT / "sessions", "a") as f:
        f.write("made\\n")
    return {"made": True}


def run(req):
    out = req.workdir / "stamp.txt"
    out.write_text(req.env.name)
    return Produced(files=(("stamp.txt", out),), meta={"published": None})


def deliver(req, meta):
    assert req.session == {"made": True} and meta["published"] is None
    target = OUT / f"{req.env.name}.txt"
    target.write_text(req.env.name)
    salt = os.environ.get("FB_TEST_SALT", "")
    if salt == "boom":
        raise ValueError("the registry said no")
    return {"published": str(target), "digest": "sha256:" + hashlib.sha256((req.env.name + salt).encode()).hexdigest()}


def after(req):
    out = req.workdir / "after.txt"
    out.write_text(req.deps[f"stamp:{req.env.name}"].digest)
    return Produced(files=(("after.txt", out),))


def rules():
    return [
        Rule(kind="stamp", version="1", description="a stamp, published outside the cache",
             inputs=lambda env, view: Inputs(params={"env": env.name}), run=run, deliver=deliver, session=session),
        Rule(kind="after", version="1", description="depends on the stamp",
             inputs=lambda env, view: Inputs(deps=(f"stamp:{env.name}",)), deps=lambda env, view: (f"stamp:{env.name}",),
             run=after),
    ]
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = copy_sample(tmp_path_factory.mktemp("deliver") / "repo")
    (root / "build_rules").mkdir()
    (root / "build_rules" / "register.py").write_text(RULES)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(TABLE, TABLE + 'rules = ["build_rules"]\n'))
    return root


def _build(root: Path, cache: Path, outside: Path, salt: str = ""):
    run = flyte_build("build", "stamp:*", "after:*", "--json", cwd=root, cache=cache,
                      env={"FB_TEST_OUTSIDE": str(outside), "FB_TEST_SALT": salt})
    assert run.rc == 0, run.describe()
    return {t["target"]: t for t in run.json()["targets"]}


def test_deliver_runs_every_build_is_never_stored_and_keys_the_dependents(project, tmp_path):
    outside, cache = tmp_path / "outside", tmp_path / "cache"
    outside.mkdir()
    first = _build(project, cache, outside)
    stamps = {a: t for a, t in first.items() if a.startswith("stamp:")}
    assert len(stamps) >= 2 and all(t["status"] == "built" for t in stamps.values())
    for t in stamps.values():
        assert t["published"] == str(outside / f"{t['env']}.txt") and Path(t["published"]).read_text() == t["env"]
    assert (outside / "sessions").read_text() == "made\n"  # one session for all the kind's targets

    for f in outside.glob("*.txt"):  # the "registry" lost what was published
        f.unlink()
    second = _build(project, cache, outside)
    assert all(second[a]["status"] == "cached" and second[a]["key"] == t["key"] for a, t in stamps.items())
    assert all(Path(second[a]["published"]).is_file() for a in stamps)  # published again on a hit
    assert (outside / "sessions").read_text() == "made\nmade\n"  # one per run, none kept in the process
    assert all(second[a]["cached"] for a in second if a.startswith("after:"))

    # a new answer from the step: the stamps stay hits, their dependents are keyed anew
    third = _build(project, cache, outside, salt="moved")
    assert all(third[a]["status"] == "cached" and third[a]["digest"] != t["digest"] for a, t in stamps.items())
    afters = [a for a in third if a.startswith("after:")]
    assert afters and all(third[a]["status"] == "built" and third[a]["key"] != second[a]["key"] for a in afters)


def test_a_deliver_step_that_raises_fails_its_target_with_the_traceback_in_its_log(project, tmp_path):
    outside, cache = tmp_path / "outside", tmp_path / "cache"
    outside.mkdir()
    _build(project, cache, outside)
    run = flyte_build("build", "stamp:*", "--json", cwd=project, cache=cache,
                      env={"FB_TEST_OUTSIDE": str(outside), "FB_TEST_SALT": "boom"})
    assert run.rc == 1, run.describe()
    failed = [t for t in run.json()["targets"] if t["status"] == "failed"]
    assert failed and all("ValueError: the registry said no" in t["error"] for t in failed), run.describe()
    log = (cache / "logs" / f"{failed[0]['target'].replace(':', '--')}.log").read_text()
    assert "Traceback" in log and 'raise ValueError("the registry said no")' in log, log
