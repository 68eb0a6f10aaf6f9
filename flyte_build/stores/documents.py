"""The shared cache's JSON documents (discovery results, affected summaries,
build manifests): read with bounds, and signed so that a reader holding verify
keys checks the signature over the stored bytes before it parses them.

Why bounds on the structure and not only on the bytes: JSON is small on disk
and large in memory. A 200 KB stored document, zlib-inflated to 200 MiB of
`[{},{},...]`, parsed into 70 million dicts: 5.4 GB of memory and
`internal error: MemoryError`. So before `json.loads`, the inflated bytes must
hold at most `Bounds.max_values` JSON values (counted from the bytes, an upper
bound: every value but the first follows a `,`, `[` or `{`), and after it the
structure is walked for its depth and the length of every string. Each
document is small in a real build; the bounds are far above that.

Signed form: the document's canonical JSON with its signature appended as the
last member, `{...,"sig":{"alg","key","value"}}`; the signature covers the
canonical JSON without it (what `canonical_json` makes of the document minus
`sig`), so the split is exact and needs no parse. A reader holding keys splits
the tail off, checks the signature, and parses only the signed bytes; one
without keys parses the whole (bounded) and drops `sig`.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass

from ..hashing import canonical_json


@dataclass(frozen=True)
class Bounds:
    max_bytes: int  # the inflated JSON
    max_values: int = 2_000_000
    max_depth: int = 64
    max_string: int = 1 << 20  # characters of one string (or key)


# the signature member as `seal` writes it: canonical JSON, base64 values
_SIG_TAIL = re.compile(
    rb',"sig":(\{"alg":"[A-Za-z0-9_-]{1,32}","key":"[A-Za-z0-9+/=]{1,128}","value":"[A-Za-z0-9+/=]{1,256}"\})\}\Z')
_TAIL_MAX = 600  # bytes the tail above can span


def inflate(data: bytes, max_bytes: int) -> bytes:
    """zlib-inflated to at most `max_bytes`: a bomb or a truncated stream is
    refused (ValueError, zlib.error), not inflated."""
    d = zlib.decompressobj()
    raw = d.decompress(data, max_bytes)
    if d.unconsumed_tail or not d.eof:
        raise ValueError(f"inflates past {max_bytes} bytes, or is truncated")
    return raw


def parse(raw: bytes, bounds: Bounds):
    """`raw`'s JSON within `bounds`, else ValueError naming the bound."""
    values = 1 + raw.count(b",") + raw.count(b"[") + raw.count(b"{")
    if values > bounds.max_values:
        raise ValueError(f"over {bounds.max_values} JSON values")
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise ValueError(f"nested deeper than {bounds.max_depth}") from None
    _check_shape(doc, bounds)
    return doc


def _check_shape(doc, bounds: Bounds) -> None:
    # level by level, not recursive: a document nested as deep as the parser
    # allows must not exhaust the stack here either; each level's values are
    # sorted into strings and containers by comprehensions (a shared discovery
    # entry holds about 200,000 values, and a fresh machine reads one per run)
    level: list = []  # the containers whose values are `children`
    children, depth = [doc], 0
    while True:
        strings = [v for v in children if type(v) is str]
        for s in (strings, *(c for c in level if type(c) is dict)):  # the values, then the objects' keys
            if max(map(len, s), default=0) > bounds.max_string:
                raise ValueError(f"a string over {bounds.max_string} characters")
        level = [v for v in children if type(v) is list or type(v) is dict]
        if not level:
            return
        depth += 1
        if depth > bounds.max_depth:
            raise ValueError(f"nested deeper than {bounds.max_depth}")
        children = []
        for c in level:
            children.extend(c.values() if type(c) is dict else c)


def load_document(data: bytes, bounds: Bounds):
    """A stored document's JSON: inflated and parsed within `bounds`."""
    return parse(inflate(data, bounds.max_bytes), bounds)


def seal(doc: dict, sig: dict | None) -> bytes:
    """The stored form (before compression) of `doc`, with `sig` (made over
    `canonical_json(doc)`) as its last member."""
    payload = canonical_json(doc)
    if sig is None:
        return payload
    assert doc, "a shared document is never empty"
    return payload[:-1] + b',"sig":' + canonical_json(sig) + b"}"


def unseal(raw: bytes) -> tuple[bytes, dict | None]:
    """(the signed bytes, the signature) of a sealed document, without parsing
    it; (raw, None) when it carries no signature in the sealed form."""
    m = _SIG_TAIL.search(raw, max(0, len(raw) - _TAIL_MAX))
    if m is None:
        return raw, None
    return raw[:m.start()] + b"}", json.loads(m.group(1))
