"""An environment's import closure, found by parsing, not by importing.

Every `import` and `from ... import` statement in a file counts, wherever it
sits: at module level, inside a function (the lazy imports flyte's own
`loaded_modules` bundler misses), under `if TYPE_CHECKING`, in a try block.
So do `importlib.import_module("literal")` and `__import__("literal")`.
Module names resolve against the search roots (the root first, then source
roots such as `src/`); a hit brings in the module's file and the
`__init__.py` of each package above it. Anything that does not resolve to a
file under the root (the standard library, site-packages) is not followed.

Parsing is cached per file digest (in `stores.file_digests`), so a no-op build parses
nothing.
"""

from __future__ import annotations

import ast
import dis
import os
import re
from pathlib import Path

from ..archives.bundle_files import STANDARD_IGNORED_DIRS

# (level, module or "", names) as found in the source
ImportRecord = tuple[int, str, tuple[str, ...]]


def parse_imports(source: bytes, filename: str = "<file>") -> list[ImportRecord]:
    """Raises SyntaxError for a file that does not parse."""
    tree = ast.parse(source, filename=filename)
    found: list[ImportRecord] = []
    for node in _nodes(tree, calls=not source.isascii() or b"import_module" in source or b"__import__" in source):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((0, alias.name, ()))
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level or 0, node.module or "", tuple(a.name for a in node.names if a.name != "*")))
        elif isinstance(node, ast.Call) and node.args:
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((0, arg.value, ()))
    return sorted(set(found))


def records_from_code(code, source: bytes) -> list[ImportRecord] | None:
    """`parse_imports(source)` read from the source's compiled code instead of
    its syntax tree, or None where the two might differ.

    Every live `import` statement compiles to LOAD_CONST level, LOAD_CONST
    fromlist, IMPORT_NAME module. The compiler drops dead code (`if 0:`,
    after a `return`), which the parse keeps, so the answer stands only when
    the source spells the word `import` exactly as often as the code holds
    import statements (one per line that starts one: a `finally` body compiled
    twice counts once): then no import statement was dropped, and there is no
    other `import` word (a comment, a string) to hide a dropped one. Calls
    (`import_module("x")`, `__import__`) are the parse's to find."""
    if not source.isascii() or b"import_module" in source or b"__import__" in source:
        return None
    found: set[ImportRecord] = set()
    lines: set[int] = set()
    if not _code_imports(code, found, lines) or len(lines) != len(_IMPORT_WORD.findall(source)):
        return None
    return sorted(found)


_IMPORT_WORD = re.compile(rb"\bimport\b")
_OP = dis.opmap
_IMPORT_NAME, _LOAD_CONST, _EXTENDED_ARG = bytes([_OP["IMPORT_NAME"]]), _OP["LOAD_CONST"], _OP["EXTENDED_ARG"]


def _code_imports(co, found: set, lines: set) -> bool:
    """Add the import records of `co` and its nested code; False on any shape
    other than the plain one (an EXTENDED_ARG, a computed operand)."""
    raw = co.co_code
    i = raw.find(_IMPORT_NAME)
    positions = None
    while i >= 0:
        if i % 2 == 0:  # an opcode, not an argument byte
            if i < 4 or raw[i - 4] != _LOAD_CONST or raw[i - 2] != _LOAD_CONST or (i >= 6 and raw[i - 6] == _EXTENDED_ARG):
                return False
            level, fromlist, name = co.co_consts[raw[i - 3]], co.co_consts[raw[i - 1]], co.co_names[raw[i + 1]]
            if not (type(level) is int and isinstance(name, str)
                    and (fromlist is None or (type(fromlist) is tuple and all(isinstance(n, str) for n in fromlist)))):
                return False
            found.add((level, name, tuple(n for n in fromlist if n != "*") if fromlist else ()))
            positions = positions or list(co.co_positions())
            line = positions[i // 2][0]
            if line is None:
                return False
            lines.add(line)
        i = raw.find(_IMPORT_NAME, i + 1)
    return all(_code_imports(c, found, lines) for c in co.co_consts if hasattr(c, "co_code"))


_STATEMENT_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _nodes(tree: ast.AST, calls: bool):
    """The nodes that may hold an import. `import` statements only sit in
    statement lists, so unless the source can name `import_module` or
    `__import__` (an ASCII source that never spells them cannot call them),
    walking the statements alone finds the same records; skipping every
    expression made a cold parse of 5,000 files several times cheaper."""
    if calls:
        yield from ast.walk(tree)
        return
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for name in _STATEMENT_FIELDS:
            children = getattr(node, name, None)
            if children:
                todo.extend(children)


def search_roots(root: Path, source_roots, sys_path) -> list[Path]:
    """Where module names resolve, in order: the root, then each source root and
    discovery's sys.path entry under it that is a directory."""
    roots = [root]
    for rel in (*source_roots, *sys_path):
        p = (root / rel).resolve()
        if p not in roots and p.is_dir():
            roots.append(p)
    return roots


class Resolver:
    """Maps module names to files under the root, with memoised lookups."""

    def __init__(self, root: Path, search_roots: list[Path]):
        self.root = Path(os.path.realpath(root))
        self.search_roots = [Path(os.path.realpath(p)) for p in search_roots]
        self._memo: dict[str, list[str]] = {}
        # per file and its import records: the files they resolve to. Shared
        # libraries sit in many envs' closures; each is resolved once per run.
        self._targets_memo: dict[tuple, frozenset[str]] = {}
        # every directory whose listing decided a lookup: while none of their
        # mtimes changes, every lookup would resolve the same way again
        self.witness: set[str] = set()
        # the same, per module name and per file's imports: a caller keeping
        # resolved imports between runs drops only those a changed directory decided
        self._module_dirs: dict[str, frozenset[str]] = {}
        self._targets_dirs: dict[tuple, frozenset[str]] = {}
        self._root_prefix = str(self.root).rstrip(os.sep) + os.sep
        self._base_prefixes = [str(b).rstrip(os.sep) + os.sep for b in self.search_roots]

    def _usable(self, path: str) -> bool:
        # a prefix test, not os.path.relpath: paths here are already normalised
        # and relpath was most of a no-op build's time at 5,000 files
        prefix = self._root_prefix
        if not path.startswith(prefix):
            return False
        rel = path[len(prefix):]
        parts = rel.split(os.sep)
        return not any(p in STANDARD_IGNORED_DIRS or p == "site-packages" for p in parts)

    def files_for(self, module: str) -> list[str]:
        """Files that importing `module` executes under the root (empty if none)."""
        hit = self._memo.get(module)
        if hit is not None:
            return hit
        found: list[str] = []
        parts = module.split(".")
        dirs: set[str] = set()
        for base in self.search_roots:
            cur = str(base)
            dirs.add(cur)
            for p in parts:
                cur = os.path.join(cur, p)
                if not os.path.isdir(cur):
                    break
                dirs.add(cur)
            d = os.path.join(base, *parts)
            candidates = [d + ".py", os.path.join(d, "__init__.py")]
            target = next((c for c in candidates if os.path.isfile(c)), None)
            if target is None and not os.path.isdir(d):
                continue
            if target is not None:
                found.append(target)
            for i in range(1, len(parts)):
                init = os.path.join(base, *parts[:i], "__init__.py")
                if os.path.isfile(init):
                    found.append(init)
            break
        found = [f for f in found if self._usable(f)]
        self.witness.update(dirs)
        self._module_dirs[module] = frozenset(dirs)
        self._memo[module] = found
        return found

    def decided_by(self, path: str, records: list[ImportRecord]) -> frozenset[str]:
        """The directories whose listing decided `targets(path, records)` (call that first)."""
        return self._targets_dirs[(path, tuple(records))]

    def module_of(self, path: str) -> tuple[str, bool] | None:
        """(dotted module name, is_package) of a file under a search root."""
        for prefix in self._base_prefixes:
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):-3].split(os.sep)
            if parts[-1] == "__init__":
                return ".".join(parts[:-1]), True
            return ".".join(parts), False
        return None

    def targets(self, path: str, records: list[ImportRecord]) -> frozenset[str]:
        memo_key = (path, tuple(records))
        hit = self._targets_memo.get(memo_key)
        if hit is not None:
            return hit
        out: set[str] = set()
        modules: list[str] = []
        mod = self.module_of(path)
        for level, module, names in records:
            if level:
                if mod is None:
                    continue
                name, is_pkg = mod
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                if level - 1 > len(pkg):
                    continue
                pkg = pkg[: len(pkg) - (level - 1)]
                base = ".".join(pkg + ([module] if module else []))
            else:
                base = module
            if base:
                modules.append(base)
            modules.extend(f"{base}.{n}" if base else n for n in names)
        for m in modules:
            out.update(self.files_for(m))
        self._targets_dirs[memo_key] = frozenset().union(*(self._module_dirs[m] for m in modules))
        hit = self._targets_memo[memo_key] = frozenset(out)
        return hit


def closure(starts: list[str], resolver: Resolver | None, records_of, edges_of=None,
            realpath=os.path.realpath) -> tuple[list[str], list[tuple[str, str]]]:
    """All files reachable from `starts` by imports. `records_of(path)` returns a
    file's import records (cached by digest) or raises SyntaxError; `edges_of(path)`,
    when given, returns the files a file's imports resolve to directly (a caller
    walking many closures memoises it, so a shared library is resolved once).

    Returns (sorted absolute paths, [(path, syntax error message)])."""
    if edges_of is None:
        def edges_of(path):
            return resolver.targets(path, records_of(path))
    seen: set[str] = set()
    errors: list[tuple[str, str]] = []
    todo = [realpath(s) for s in starts]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if not path.endswith(".py"):
            continue
        try:
            edges = edges_of(path)
        except SyntaxError as exc:
            errors.append((path, f"line {exc.lineno}: {exc.msg}"))
            continue
        for t in edges:
            if t not in seen:
                todo.append(t)
    return sorted(seen), errors
