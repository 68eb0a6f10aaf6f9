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


class _Mismatch(Exception):
    pass


def _expected_stream(members) -> list:
    """The expected tar stream, in order: (bytes, what) to match exactly and
    (size, sha256, name) spans to match by digest."""
    pieces, written = [], 0
    for name, rest in archive.layout(members):
        if rest is None:
            head = archive.dir_header(name)
            pieces.append((head, f"the header of directory {name}"))
            written += len(head)
            continue
        digest, size, executable = rest
        head = archive.file_header(name, size, executable)
        pad = archive.NUL * (-size % archive.BLOCK)
        pieces += [(head, f"the header of {name} (name, size, mode)"), (size, digest, name)]
        if pad:
            pieces.append((pad, f"the padding after {name}"))
        written += len(head) + size + len(pad)
    pieces.append((archive.end_blocks(written), "the end of the archive (a member list that differs)"))
    return pieces


def _length(pieces) -> int:
    return sum(p[0] if len(p) == 3 else len(p[0]) for p in pieces)


class _Walker:
    """Consumes the inflated stream piece by piece against the expected pieces."""

    def __init__(self, pieces: list):
        self.pieces = pieces
        self.i = 0  # the expected piece being matched
        self.at = 0  # bytes of it matched so far
        self.h = None

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.i >= len(self.pieces):
                raise _Mismatch("data after the end of the archive")
            item = self.pieces[self.i]
            if len(item) == 3:
                size, digest, name = item
                if self.h is None:
                    self.h = hashlib.sha256()
                take = view[: size - self.at]
                self.h.update(take)
                self.at += len(take)
                view = view[len(take):]
                if self.at == size:
                    if self.h.hexdigest() != digest:
                        raise _Mismatch(f"member {name} is not the file here")
                    self._next()
            else:
                want, what = item
                take = view[: len(want) - self.at]
                if bytes(take) != want[self.at:self.at + len(take)]:
                    raise _Mismatch(f"{what} differs")
                self.at += len(take)
                view = view[len(take):]
                if self.at == len(want):
                    self._next()

    def _next(self) -> None:
        self.i, self.at, self.h = self.i + 1, 0, None

    def done(self) -> bool:
        return self.i >= len(self.pieces)


def why_not(path, members) -> str | None:
    """Why the .tar.gz at `path` is not the archive `archive.write_tar_gz` makes of
    `members` ((name, hex sha256, size, executable)), or None when it is."""
    pieces = _expected_stream(members)
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
