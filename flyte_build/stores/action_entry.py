"""Action entries: what the action cache stores under an action key, and the
schema every entry read from a cache is checked against before it is used.

An entry names the outputs of one action (a plain file name, the sha256 of
its bytes, its size) and carries the rule's small JSON metadata. Entries come
from the local cache and from a shared cache a writer may control, so `parse`
trusts nothing: field by field, bounded in size, depth and length, and
nothing in a valid entry can name a path outside its directory (see BUILD.md,
"Trust and the shared cache").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..hashing import canonical_json

ENTRY_FORMAT = 1

# The entry schema's bounds. An entry is a few hundred bytes; these only stop
# a hostile or broken one from costing memory, disk or time (see BUILD.md,
# "Trust and the shared cache").
MAX_ENTRY_BYTES = 1 << 20  # an action entry's JSON
MAX_OUTPUTS = 64
MAX_BLOB_BYTES = 16 << 30  # one output: 16 GiB
MAX_META_DEPTH = 4
MAX_META_ITEMS = 1000  # keys of one table or items of one list
MAX_META_STRING = 4096

HEX64 = re.compile(r"[0-9a-f]{64}")
# an output's name is a plain file name: its extension names the file under `--out`
OUTPUT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
TARGET = re.compile(r"[a-z][a-z0-9_-]{0,63}:[^\x00-\x1f]{1,256}")
META_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
SIG_FIELDS = {"alg", "key", "value"}


class BadEntry(ValueError):
    """An action entry that does not match the schema; the message says which field."""


def is_hex64(value: object) -> bool:
    return isinstance(value, str) and HEX64.fullmatch(value) is not None


@dataclass(frozen=True)
class Output:
    """One file an action produced."""

    name: str
    digest: str  # hex sha256
    size: int


@dataclass(frozen=True)
class ActionEntry:
    key: str
    target: str
    outputs: tuple[Output, ...]
    meta: dict = field(default_factory=dict)
    # a signature over `payload()` (see `signing`), or None; set on shared entries
    sig: dict | None = None

    def payload(self) -> bytes:
        """The signed bytes: everything but the signature."""
        return canonical_json(self._doc())

    def _doc(self) -> dict:
        return {
            "format": ENTRY_FORMAT,
            "key": self.key,
            "target": self.target,
            "outputs": [o.__dict__ for o in self.outputs],
            "meta": self.meta,
        }

    def to_json(self) -> bytes:
        doc = self._doc()
        if self.sig is not None:
            doc["sig"] = self.sig
        return canonical_json(doc)

    @classmethod
    def parse(cls, key: str, data: bytes) -> "ActionEntry":
        """The entry stored under `key`, checked against the schema; BadEntry says
        which field is wrong. Nothing in a valid entry can name a path outside
        its directory: output names are plain file names, digests 64 hex."""
        if len(data) > MAX_ENTRY_BYTES:
            raise BadEntry(f"entry is {len(data)} bytes (at most {MAX_ENTRY_BYTES})")
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError):
            raise BadEntry("not JSON") from None
        if not isinstance(raw, dict):
            raise BadEntry("not a JSON object")
        extra = set(raw) - {"format", "key", "target", "outputs", "meta", "sig"}
        if extra:
            raise BadEntry(f"unknown field {sorted(extra)[0]!r}")
        if raw.get("format") != ENTRY_FORMAT:
            raise BadEntry(f"format {raw.get('format')!r} (expected {ENTRY_FORMAT})")
        if raw.get("key") != key:
            raise BadEntry("stored under another action key")
        target = raw.get("target")
        if not isinstance(target, str) or not TARGET.fullmatch(target):
            raise BadEntry("target is not KIND:ENV")
        outs = raw.get("outputs")
        if not isinstance(outs, list) or len(outs) > MAX_OUTPUTS:
            raise BadEntry(f"outputs must be a list of at most {MAX_OUTPUTS}")
        outputs = tuple(_output(i, o) for i, o in enumerate(outs))
        if len({o.name for o in outputs}) != len(outputs):
            raise BadEntry("two outputs with one name")
        meta = raw.get("meta", {})
        if not isinstance(meta, dict):
            raise BadEntry("meta is not a table")
        _check_meta(meta, "meta", 1)
        if "digest" in meta and not (isinstance(meta["digest"], str) and meta["digest"].startswith("sha256:") and is_hex64(meta["digest"][7:])):
            raise BadEntry("meta.digest is not sha256:<64 hex>")
        sig = raw.get("sig")
        if sig is not None and not (isinstance(sig, dict) and set(sig) == SIG_FIELDS and all(isinstance(v, str) and len(v) <= 512 for v in sig.values())):
            raise BadEntry("sig is not {alg, key, value}")
        return cls(key=key, target=target, outputs=outputs, meta=meta, sig=sig)

    @classmethod
    def from_json(cls, key: str, data: bytes) -> "ActionEntry | None":
        """`parse`, with None for an entry that does not match the schema."""
        try:
            return cls.parse(key, data)
        except BadEntry:
            return None


def _output(i: int, o: object) -> Output:
    if not isinstance(o, dict) or set(o) != {"name", "digest", "size"}:
        raise BadEntry(f"outputs[{i}] is not {{name, digest, size}}")
    name, digest, size = o["name"], o["digest"], o["size"]
    if not isinstance(name, str) or not OUTPUT_NAME.fullmatch(name) or ".." in name:
        raise BadEntry(f"outputs[{i}].name is not a plain file name")
    if not is_hex64(digest):
        raise BadEntry(f"outputs[{i}].digest is not 64 lowercase hex characters")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_BYTES:
        raise BadEntry(f"outputs[{i}].size is not an integer in 0..{MAX_BLOB_BYTES}")
    return Output(name, digest, size)


def _check_meta(value: object, where: str, depth: int) -> None:
    """JSON values only, bounded in depth, breadth and string length."""
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        if len(value) > MAX_META_STRING:
            raise BadEntry(f"{where} is a string over {MAX_META_STRING} characters")
        return
    if depth > MAX_META_DEPTH:
        raise BadEntry(f"{where} is nested deeper than {MAX_META_DEPTH}")
    if isinstance(value, list):
        if len(value) > MAX_META_ITEMS:
            raise BadEntry(f"{where} has over {MAX_META_ITEMS} items")
        for i, v in enumerate(value):
            _check_meta(v, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        if len(value) > MAX_META_ITEMS:
            raise BadEntry(f"{where} has over {MAX_META_ITEMS} keys")
        for k, v in value.items():
            if depth == 1 and not META_KEY.fullmatch(k):
                raise BadEntry(f"{where} has a key that is not a plain name")
            _check_meta(v, f"{where}.{k}", depth + 1)
        return
    raise BadEntry(f"{where} is not a JSON value")
