"""Fingerprints of compiled modules (`code_print`), and the child's record of
every user module's (`CodePrints`): an edit that leaves a module's code the same
(a comment, trailing blank lines) keeps discovery's result.
"""

from __future__ import annotations

import hashlib
import os
import sys


def code_print(code) -> str:
    """A fingerprint of a compiled module: its bytecode, constants, names, line
    table and those of every function and class in it, not its file name. An
    edit that leaves it the same (a comment, trailing blank lines) runs the
    same code at import, so discovery's result stands (see `discovery`)."""
    h = hashlib.blake2b(digest_size=16)
    _feed_code(code, h)
    return h.hexdigest()


def _feed_code(co, h) -> None:
    h.update(repr((co.co_argcount, co.co_posonlyargcount, co.co_kwonlyargcount, co.co_nlocals, co.co_stacksize,
                   co.co_flags, co.co_firstlineno, co.co_name, getattr(co, "co_qualname", ""), co.co_names,
                   co.co_varnames, co.co_freevars, co.co_cellvars, len(co.co_consts))).encode())
    for part in (co.co_code, co.co_linetable, getattr(co, "co_exceptiontable", b"")):
        h.update(len(part).to_bytes(8, "little") + part)
    for c in co.co_consts:
        if hasattr(c, "co_code"):
            h.update(b"\x00code")
            _feed_code(c, h)
        else:
            text = _const_text(c).encode("utf-8", "surrogatepass")
            h.update(len(text).to_bytes(8, "little") + text)


def _const_text(c) -> str:
    # a frozenset's repr follows string hashing (PYTHONHASHSEED): sort its members
    if isinstance(c, frozenset):
        return "frozenset:" + repr(sorted(_const_text(x) for x in c))
    if isinstance(c, tuple):
        return "tuple:" + repr([_const_text(x) for x in c])
    return f"{type(c).__name__}:{c!r}"


class CodePrints:
    """The `code_print` of every user module the import system compiles while
    installed, by file (through `SourceLoader.source_to_code`, which every
    source import goes through; a module loaded from a `.pyc` gets none).
    Where the parent compiled the module already (`handed`), its code and
    print are used instead of compiling again."""

    def __init__(self, root: str, handed=None):
        self.prefix = root.rstrip("/") + "/"
        self.prints: dict[str, str] = {}  # absolute path -> print
        self._orig = None
        self.handed = handed  # a discovery_code.Handed: code the parent compiled already
        self._names: dict[str, tuple[str, str]] = {}  # path -> (relative to the root, absolute)

    def install(self) -> None:
        import importlib._bootstrap_external as be

        orig = self._orig = be.SourceLoader.source_to_code
        prints, prefix, handed = self.prints, self.prefix, self.handed

        def source_to_code(loader, data, path, *, _optimize=-1):
            got = handed.take(path, data, _optimize) if handed is not None and isinstance(path, str) else None
            if got is not None:
                prints[path] = got[1]
                return got[0]
            code = orig(loader, data, path, _optimize=_optimize)
            # the parent compiles with optimize=0 to compare: an -O child (PYTHONOPTIMIZE) records none
            if isinstance(path, str) and path.startswith(prefix) and _optimize == -1 and not sys.flags.optimize:
                prints[path] = code_print(code)
            return code

        be.SourceLoader.source_to_code = source_to_code

    def uninstall(self) -> None:
        import importlib._bootstrap_external as be

        be.SourceLoader.source_to_code = self._orig

    def by_file(self, root: str, read: set[str]) -> dict[str, str]:
        """{file relative to the root: print}, less the files something read as
        text at import (`inspect.getsource`, `open(__file__)`): their text, not
        only their code, may be in the result."""
        names = self._names
        out = {}
        for p, v in sorted(self.prints.items()):
            got = names.get(p)
            if got is None:  # (relative, absolute): string work, kept for the warm child's forks
                got = names[p] = (os.path.relpath(p, root), os.path.abspath(p))
            if got[1] not in read:
                out[got[0]] = v
        return out
