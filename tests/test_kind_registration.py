"""Each kind folder registers itself (rules/<kind>/register.py); rules/register.py
only gathers the kinds' registrations, and the result is what the CLI, the
Python API and the config check see."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from flyte_build.engine import rulesets

pytestmark = pytest.mark.timeout(60)

RULES = Path(__file__).resolve().parents[1] / "rules"


def _kind_folders() -> list[str]:
    return sorted(p.name for p in RULES.iterdir() if (p / "__init__.py").is_file())


def test_every_kind_folder_registers_itself_and_is_collected():
    register = rulesets.builtin("register")
    assert sorted(register.KINDS) == _kind_folders()
    for kind in register.KINDS:
        assert (RULES / kind / "register.py").is_file(), f"rules/{kind} has no register.py"
    # each kind's rule comes from its own folder, by its own registration
    for kind in register.KINDS:
        own = rulesets.builtin(f"{kind}.register")
        for rule in own.rules():
            assert rule.kind == kind and rulesets.builtin_rules()[kind] is rule
    assert list(rulesets.builtin_rules()) == [k for k in register.KINDS]


def test_the_set_register_names_no_kind_module():
    """rules/register.py imports no kind's rule, command or goal module: its only
    import is importlib (the kinds' register modules are found through KINDS)."""
    tree = ast.parse((RULES / "register.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [a.name for n in imports for a in n.names] == ["importlib"]


def test_collected_hooks_are_the_union_of_the_kinds():
    register = rulesets.builtin("register")
    tables, api, commands = {}, {}, []
    for kind in register.KINDS:
        own = rulesets.builtin(f"{kind}.register")
        tables.update(getattr(own, "config_tables", dict)())
        api.update(getattr(own, "api", dict)())
        commands += getattr(own, "commands", list)()
    assert register.config_tables() == tables and {"docker", "pex", "deploy"} <= set(tables)
    assert register.api() == api and "plan" in api
    assert [m.__name__ for m in rulesets.commands()] == [m.__name__ for m in commands]
    assert rulesets.api("plan") is api["plan"]


def test_two_kinds_registering_one_name_is_refused(monkeypatch):
    register = rulesets.builtin("register")
    image = importlib.import_module(f"{register.__package__}.image.register")
    monkeypatch.setattr(image, "api", lambda: {"plan": object()}, raising=False)
    with pytest.raises(RuntimeError, match="two built-in kinds register `plan` in api"):
        register.api()
