"""BUILD.md's "Writing a rule" example is a rule set that works as the guide says.

The example's code is taken from the guide (the ```python fence under "Writing
a rule"), written to `build_rules/register.py` in a copy of sample_monorepo
and named in its config, as the guide tells a user to do. Then what the guide
promises: `build 'lint:*'` lints every env, a second run is all cache hits,
and an edit that ruff rejects fails that env's lint alone, naming it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.cli import copy_sample, flyte_build

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
TABLE = "[tool.hatch.build.targets.flyte]\n"


def rule_example() -> str:
    section = (REPO / "BUILD.md").read_text().split("\n### Writing a rule\n", 1)[1]
    match = re.search(r"^```python\n(.*?)^```$", section, re.S | re.M)
    assert match, "BUILD.md: no ```python fence under 'Writing a rule'"
    return match.group(1)


def test_the_example_is_the_guides_lint_rule():
    code = rule_example()
    assert "def rules():" in code and 'kind="lint"' in code


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = copy_sample(tmp_path_factory.mktemp("rule-example") / "repo")
    (root / "build_rules").mkdir()
    (root / "build_rules" / "register.py").write_text(rule_example())
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    assert text.count(TABLE) == 1
    pyproject.write_text(text.replace(TABLE, TABLE + 'rules = ["build_rules"]\n'))
    return root


def _lint(root: Path, cache: Path):
    run = flyte_build("build", "lint:*", "--json", cwd=root, cache=cache)
    return run, {t["target"]: t for t in run.json()["targets"]}


def test_lint_runs_per_env_is_cached_and_fails_alone_on_a_bad_edit(project, tmp_path):
    cache = tmp_path / "cache"
    first, lints = _lint(project, cache)
    assert first.rc == 0, first.describe()
    envs = first.json()["discovery"]["envs"]
    assert sorted(lints) == sorted(f"lint:{e}" for e in envs) and len(envs) >= 2
    assert all(t["status"] == "built" for t in lints.values()), lints

    again, lints = _lint(project, cache)
    assert again.rc == 0 and all(t["cached"] for t in lints.values()), again.describe()

    # an unused import in one env's module: that env's lint fails, named; the others stay hits
    tasks = project / "services" / "inference" / "tasks.py"
    tasks.write_text(tasks.read_text() + "\nimport os  # unused\n")
    broken, lints = _lint(project, cache)
    assert broken.rc == 1, broken.describe()
    failed = sorted(a for a, t in lints.items() if t["status"] == "failed")
    assert failed == ["lint:inference"], broken.describe()
    bad = lints["lint:inference"]
    assert bad["error"] == "lint:inference: ruff found problems", bad
    assert "F401" in Path(bad["log"]).read_text(), bad  # the rule's log holds ruff's report
    assert all(t["cached"] for a, t in lints.items() if a not in failed and "inference" not in a), broken.describe()
