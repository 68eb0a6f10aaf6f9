"""The code's shape (issue 18): no function in the package is over 60 lines.

Every function and method in `flyte_build/` and `rules/` is read with `ast`
(nested functions too, and a function's length includes theirs: the lines
from its `def` to its last line). A function over the limit fails the test,
named with its file and length, so a long function cannot come back unseen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("flyte_build", "rules")
LIMIT = 60

def _functions() -> list[tuple[str, str, int]]:
    """(repository-relative file, qualified name, lines) of every function in the packages."""
    out = []

    def visit(node: ast.AST, rel: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((rel, prefix + child.name, child.end_lineno - child.lineno + 1))
                visit(child, rel, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, rel, prefix + child.name + ".")
            else:
                visit(child, rel, prefix)

    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            visit(ast.parse(path.read_text(encoding="utf-8"), filename=rel), rel, "")
    return out


def _too_long(functions) -> list[str]:
    return [f"{rel}: {name} is {n} lines (limit {LIMIT})" for rel, name, n in functions if n > LIMIT]


def test_the_walk_sees_the_packages():
    functions = _functions()
    files = {rel for rel, _, _ in functions}
    # the rule set and the engine are both read (a wrong root would pass vacuously)
    assert any(rel.startswith("rules/") for rel in files) and any(rel.startswith("flyte_build/") for rel in files)
    assert any(name == "render" and n > 1 for _, name, n in functions)


def test_no_function_is_over_60_lines():
    long = _too_long(_functions())
    assert not long, "functions over the limit (split them into smaller, well-named ones):\n  " + "\n  ".join(long)
