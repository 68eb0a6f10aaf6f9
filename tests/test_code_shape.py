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

# Long functions another change of issue 17 (the `perf` part) is splitting at the
# same time. They are checked by the xfail test below, not the strict one, until
# they are split; the list then goes. Nothing else may be added here: a new long
# function is split, not listed. Named by file name and function, so a file
# that moves to another folder keeps its entry.
BEING_SPLIT = {
    ("discovery.py", "_discover"),
    ("discovery.py", "_incremental"),
    ("files.py", "walk"),
    ("archive.py", "write_tar_gz"),
    ("build.py", "_snapshot"),
}


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


def _being_split(rel: str, name: str) -> bool:
    return (Path(rel).name, name) in BEING_SPLIT


def test_the_walk_sees_the_packages():
    functions = _functions()
    files = {rel for rel, _, _ in functions}
    # the rule set and the engine are both read (a wrong root would pass vacuously)
    assert any(rel.startswith("rules/") for rel in files) and any(rel.startswith("flyte_build/") for rel in files)
    assert any(name == "render" and n > 1 for _, name, n in functions)


def test_no_function_is_over_60_lines():
    long = _too_long((rel, name, n) for rel, name, n in _functions() if not _being_split(rel, name))
    assert not long, "functions over the limit (split them into smaller, well-named ones):\n  " + "\n  ".join(long)


@pytest.mark.xfail(strict=False, reason="the perf part of issue 17 is splitting these (BEING_SPLIT)")
def test_the_functions_being_split_are_not_over_60_lines():
    long = _too_long((rel, name, n) for rel, name, n in _functions() if _being_split(rel, name))
    assert not long, "functions over the limit:\n  " + "\n  ".join(long)
