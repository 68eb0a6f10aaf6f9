"""Compiled code that discovery's parent hands to its child.

A cold discovery imports every candidate module in the child, one after the
other, and compiling their sources was a third of that (1.4 s of CPU at 5,000
files). The parent reads every candidate anyway while the child runs (the
import records make the bundles' closures), on the other core: it compiles
each one instead of parsing it, takes the import records from the code
(`imports.records_from_code`, the parse where they might differ) and leaves
the code for the child as marshal data (what a `.pyc` holds), with its code
print (`code_prints.code_print`, for the early cutoff).

The child takes a handed-over code object only for the very bytes the import
system read (their sha256), at the same path (the code's file name), with no
optimisation, and only when compiling it raised no warning (a module run
before may have made warnings errors): otherwise it compiles as it always
did. The parent skips handing over modules the child has already passed.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
import types
import warnings

from .code_prints import code_print
from .reads import read_progress

_LEAD = 64  # modules to jump ahead of the child once it caught up: it imports handed code faster than the parent compiles
_CHECK_EVERY = 32  # modules between two looks at the child's progress


def prefetch(root, candidates: list[str], digests, stream: str | None = None, progress: str | None = None,
             memo=None) -> None:
    """Digest, compile and read the imports of each candidate (relative to
    `root`) while the child imports them; the code goes to the file `stream`.
    Modules the child has passed already only need their records, which wait
    until the code for the modules ahead of it is out. `memo` (a
    `discovery.code_memo.CodeMemo`): the code earlier runs compiled, handed over
    again for the same bytes (wherever the child is: it costs nothing), and
    where this run's goes; while the child still runs, the modules it passed
    are compiled for the memo too, so the next run finds them there."""
    real_root = os.path.realpath(root)
    memo = memo if memo is not None and memo.keeps else None
    index = {rel: i for i, rel in enumerate(candidates)}
    skip_below = 0
    later = []
    out = open(stream, "ab") if stream else None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i, rel in enumerate(candidates):
                if progress and i % _CHECK_EVERY == 0:
                    skip_below = max(skip_below, _child_at(progress, index) + _LEAD)
                if not _prefetch_one(root, real_root, rel, digests, caught, out, memo, out is not None and i < skip_below):
                    later.append(rel)
            for n, rel in enumerate(later):
                if memo is not None and progress and n % _CHECK_EVERY == 0 and _child_at(progress, index) >= len(candidates) - 1:
                    memo = None  # the child is at its last module: filling the memo must not outlast it
                _prefetch_one(root, real_root, rel, digests, caught, None, memo, False)
    finally:
        if out is not None:
            out.close()


def _prefetch_one(root, real_root: str, rel: str, digests, caught: list, out, memo, behind: bool) -> bool:
    """False when the module waits (`behind`: the child may have passed it, and the memo has not got it)."""
    from ..engine.import_edges import import_records

    path = str(root / rel)
    try:
        hex_ = digests.digest(path)[0]
        frame = memo.frame(rel, hex_) if memo is not None and digests.parsed(hex_) is not None else None
        if frame is not None:  # compiled by an earlier run from these very bytes
            if out is not None:
                _send(out, frame)
            return True
        if behind:
            return False
        if not _compile_one(path, os.path.join(real_root, rel), hex_, digests, caught, out,
                            (rel, memo) if memo is not None else None):
            import_records(path, hex_, digests)  # the parse's records (or its syntax error)
    except (OSError, SyntaxError, ValueError):
        pass  # reported where it matters, by the child or by the closure
    return True


def _child_at(progress: str, index: dict) -> int:
    where = read_progress(progress)
    return index.get(where[1], -1) if where else -1


def _compile_one(path: str, code_path: str, hex_: str, digests, caught: list, out, keep=None) -> bool:
    """Records (and the handed-over code) from compiling the file; False when
    the parse must answer instead (changed bytes, a syntax error). `keep`:
    (file, memo) that the code is kept in, handed over or not."""
    if digests.parsed(hex_) is not None and out is None and keep is None:
        return True  # records known (a warm stat cache), nothing to hand over
    with open(path, "rb") as f:
        source = f.read()
    if hashlib.sha256(source).hexdigest() != hex_:
        return False
    del caught[:]
    try:
        # as the import system compiles in the child (source_to_code, no -O)
        code = compile(source, code_path, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):
        return False
    if digests.parsed(hex_) is None:
        from . import imports  # here, not above: the child imports this module too, and needs none of it

        records = imports.records_from_code(code, source)
        if records is None:
            records = imports.parse_imports(source, path)
        digests.remember_parsed(hex_, [list(r) for r in records])
    if not caught and (out is not None or keep is not None):
        frame = marshal.dumps((code_path, hex_, code_print(code), code))
        if out is not None:
            _send(out, frame)
        if keep is not None:
            keep[1].add(keep[0], hex_, frame)
    return True


def _send(out, frame: bytes) -> None:
    out.write(len(frame).to_bytes(8, "little") + frame)
    out.flush()  # one write: the child reads whole frames only


class Handed:
    """The child's side: the code the parent compiled for a module, if it is
    for these bytes. The stream is read as it grows: frames of an 8-byte
    length and marshal data; an incomplete last frame waits for the next read."""

    def __init__(self, stream: str | None, root: str):
        self.prefix = root.rstrip("/") + "/"
        self.code: dict[str, tuple] = {}  # path -> (sha256 of the source, print, code)
        self._buf = b""
        try:
            self._fd = os.open(stream, os.O_RDONLY) if stream else None
        except OSError:
            self._fd = None

    def take(self, path: str, data: bytes, optimize: int):
        """(code, print) or None."""
        if self._fd is None or optimize != -1 or sys.flags.optimize or not isinstance(data, bytes):
            return None
        if path not in self.code:
            self._read()
        got = self.code.pop(path, None)
        if got is None or got[0] != hashlib.sha256(data).hexdigest():
            return None
        return got[2], got[1]

    def _read(self) -> None:
        # frame by frame as each chunk comes: joining the whole stream first held it twice
        # (tens of megabytes at 20k files) beside the code objects it holds
        buf = self._buf
        while chunk := os.read(self._fd, 1 << 22):
            buf = self._frames(buf + chunk if buf else chunk)
        self._buf = buf

    def _frames(self, buf: bytes) -> bytes:
        """Take the whole frames at the start of `buf`; the incomplete rest."""
        at, view = 0, memoryview(buf)
        while len(buf) - at >= 8 and len(buf) - at - 8 >= (n := int.from_bytes(buf[at:at + 8], "little")):
            try:
                got = marshal.loads(view[at + 8:at + 8 + n])
            except (EOFError, ValueError, TypeError):
                got = None
            at += 8 + n
            if (isinstance(got, tuple) and len(got) == 4 and isinstance(got[0], str) and isinstance(got[1], str)
                    and isinstance(got[2], str) and isinstance(got[3], types.CodeType)):
                self.code[got[0]] = got[1:]
        view.release()
        return buf[at:]
