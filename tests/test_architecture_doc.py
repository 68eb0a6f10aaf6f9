"""BUILD.md's Architecture section names every product module, one line each.

The section's first fence is a tree: a line per package (`name/`) and module
(`name.py`), indented two spaces per level, each with what it holds. A module
added to flyte_build/ or rules/ without its line fails here, and so does a
line for a module that is gone. `__init__.py` files are not listed; a
generated directory (tests/test_code_shape.py's GENERATED) is one line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_code_shape import GENERATED, PACKAGES

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
ENTRY = re.compile(r"^( *)(\S+/|\S+\.py) {2,}(\S.*)$")


def architecture_tree(text: str) -> list[tuple[str, str]]:
    """(path, description) of every line of the Architecture section's tree."""
    section = text.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    fence = re.search(r"^```\w*\n(.*?)^```$", section, re.S | re.M)
    assert fence, "BUILD.md: no tree fence in the Architecture section"
    entries, stack = [], []
    for line in fence.group(1).splitlines():
        m = ENTRY.match(line)
        assert m and len(m.group(1)) % 2 == 0, f"BUILD.md Architecture: not a tree line: {line!r}"
        depth = len(m.group(1)) // 2
        assert depth <= len(stack), f"BUILD.md Architecture: indented past its package: {line!r}"
        stack[depth:] = [m.group(2)]
        entries.append(("".join(stack), m.group(3)))
    return entries


def product_paths() -> set[str]:
    """Every package directory and module of the products, as the tree names them."""
    out = set()
    for top in PACKAGES:
        for path in (REPO / top).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            gen = next((g for g in GENERATED if rel.startswith(g)), None)
            if gen:
                out.add(gen)
                continue
            parts = rel.split("/")
            out.update("/".join(parts[:i]) + "/" for i in range(1, len(parts)))
            if parts[-1] != "__init__.py":
                out.add(rel)
    return out


def test_the_tree_parses_nested_paths():
    tree = dict(architecture_tree("x\n## Architecture\n\n```text\na/  top\n  b.py  one\n  c/  pkg\n    d.py  two\n"
                                  "e/  other\n```\n## Next\n"))
    assert tree == {"a/": "top", "a/b.py": "one", "a/c/": "pkg", "a/c/d.py": "two", "e/": "other"}


def test_every_product_module_has_its_line_and_every_line_its_module():
    documented = [p for p, _ in architecture_tree((REPO / "BUILD.md").read_text())]
    actual = product_paths()
    assert "flyte_build/engine/executor.py" in actual and "rules/bundle/rule.py" in actual
    missing = sorted(actual - set(documented))
    gone = sorted(set(documented) - actual)
    twice = sorted({p for p in documented if documented.count(p) > 1})
    assert not missing, "BUILD.md Architecture: add a line for each of: " + ", ".join(missing)
    assert not gone, "BUILD.md Architecture: listed but not in the repository: " + ", ".join(gone)
    assert not twice, "BUILD.md Architecture: listed twice: " + ", ".join(twice)
