"""Whether an archive from a shared cache is the one these inputs make.

A shared bundle is a deterministic archive of files the reader has (see
`archive`): the reader knows every member's name, size, mode and sha256 from
its own inputs, so it can tell the archive that its own build would make from
anything else without building it. The check inflates the blob once and walks
the tar stream against the one the inputs describe: every header byte for
byte (name, mode, size, mtime, owner, PAX records), every member's content by
sha256, the padding, the end blocks; then the gzip layer: the fixed header
`archive` writes, one member, its CRC and length, nothing after it. No deflate
runs, and the output is bounded by the expected stream's length, so a bomb
costs no more than a good archive. Any difference is named in the answer.
"""

from __future__ import annotations

import hashlib
import zlib

from . import tar_gz as archive

CHUNK = 1 << 20
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class _Mismatch(Exception):
    pass


# what each part of an exact run is, for the answer (made only on the failure path)
_PARTS = {"dir": "the header of directory {}", "head": "the header of {} (name, size, mode)",
          "pad": "the padding after {}", "end": "the end of the archive (a member list that differs)"}


def _expected_stream(members) -> list:
    """The expected tar stream, in order: (bytes, [(offset, part, name)]) runs to
    match exactly -- consecutive headers and padding joined -- and
    (size, (sha256, name)) spans to match by digest."""
    pieces: list = []
    run: list = []
    parts: list = []
    at = written = 0
    for name, rest in archive.layout(members):
        if rest is None:
            head = archive.dir_header(name)
            parts.append((at, "dir", name))
            run.append(head)
            at += len(head)
            written += len(head)
            continue
        digest, size, executable = rest
        head = archive.file_header(name, size, executable)
        parts.append((at, "head", name))
        run.append(head)
        at += len(head)
        if size:
            pieces.append((b"".join(run), parts))
            pieces.append((size, (digest, name)))
            run, parts, at = [], [], 0
        elif digest != EMPTY_SHA256:
            return []  # an empty file whose digest is not the empty one: no archive matches
        pad = archive.NUL * (-size % archive.BLOCK)
        if pad:
            parts.append((at, "pad", name))
            run.append(pad)
            at += len(pad)
        written += len(head) + size + len(pad)
    parts.append((at, "end", ""))
    run.append(archive.end_blocks(written))
    pieces.append((b"".join(run), parts))
    return pieces


def _length(pieces) -> int:
    return sum(p[0] if type(p[0]) is int else len(p[0]) for p in pieces)


def _what(want: bytes, parts: list, at: int, got: bytes) -> str:
    """The part of an exact run that differs, for the answer (the failure path only)."""
    first = at + next((i for i, (a, b) in enumerate(zip(got, want[at:])) if a != b), 0)
    _, part, name = next(p for p in reversed(parts) if p[0] <= first)
    return _PARTS[part].format(name)


class _Walker:
    """Consumes the inflated stream against the expected pieces. A piece that
    lies whole in the chunk at hand is matched in one C call (a prefix compare,
    one sha256), so the Python work is per member, not per byte, and the big
    parts (inflate, hashing) run without the GIL."""

    def __init__(self, pieces: list):
        self.pieces = pieces
        self.i = 0  # the expected piece being matched
        self.at = 0  # bytes of it matched so far
        self.h = None

    def feed(self, data: bytes) -> None:
        pieces, n, pos = self.pieces, len(data), 0
        view = memoryview(data)
        while pos < n:
            if self.i >= len(pieces):
                raise _Mismatch("data after the end of the archive")
            want, info = pieces[self.i]
            if type(want) is int:  # a member's bytes: by digest
                if self.at == 0 and n - pos >= want:
                    if hashlib.sha256(view[pos:pos + want]).hexdigest() != info[0]:
                        raise _Mismatch(f"member {info[1]} is not the file here")
                    pos += want
                    self.i += 1
                    continue
                if self.h is None:
                    self.h = hashlib.sha256()
                take = min(want - self.at, n - pos)
                self.h.update(view[pos:pos + take])
                pos, self.at = pos + take, self.at + take
                if self.at == want:
                    if self.h.hexdigest() != info[0]:
                        raise _Mismatch(f"member {info[1]} is not the file here")
                    self._next()
                continue
            take = min(len(want) - self.at, n - pos)
            if not (data.startswith(want, pos) if self.at == 0 and take == len(want)
                    else data[pos:pos + take] == want[self.at:self.at + take]):
                raise _Mismatch(f"{_what(want, info, self.at, data[pos:pos + take])} differs")
            pos, self.at = pos + take, self.at + take
            if self.at == len(want):
                self._next()

    def _next(self) -> None:
        self.i, self.at, self.h = self.i + 1, 0, None

    def done(self) -> bool:
        return self.i >= len(self.pieces)


HELPER = None  # a `check_helper.Helper` while a build runs with one


def why_not(path, members) -> str | None:
    """Why the .tar.gz at `path` is not the archive `archive.write_tar_gz` makes of
    `members` ((name, hex sha256, size, executable)), or None when it is: in the
    helper process when there is one (`check_helper`), else here."""
    helper = HELPER
    if helper is not None:
        done, answer = helper.ask(path, members)
        if done:
            return answer
    return why_not_here(path, members)


def why_not_here(path, members) -> str | None:
    """`why_not`, in this process."""
    pieces = _expected_stream(members)
    if not pieces:
        return "an empty member whose digest is not the empty file's"
    expected = _length(pieces)
    walker = _Walker(pieces)
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    crc = total = 0
    try:
        with open(path, "rb") as f:
            if f.read(len(archive.GZIP_HEADER)) != archive.GZIP_HEADER:
                return "not the gzip header flyte-build writes"
            tail = b""
            while not d.eof:
                chunk = d.unconsumed_tail or f.read(CHUNK)
                if not chunk:
                    return "truncated archive"
                out = d.decompress(chunk, expected - total + 1)
                total += len(out)
                if total > expected:
                    return "larger than the archive these inputs make"
                crc = zlib.crc32(out, crc)
                walker.feed(out)
            tail = d.unused_data + f.read(9)
    except _Mismatch as exc:
        return str(exc)
    except zlib.error as exc:
        return f"not a deflate stream ({exc})"
    if not walker.done():
        return "fewer members than these inputs make"
    if tail[:8] != crc.to_bytes(4, "little") + (total & 0xFFFFFFFF).to_bytes(4, "little"):
        return "bad gzip trailer"
    if len(tail) != 8:
        return "data after the gzip member"
    return None
