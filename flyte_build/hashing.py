"""Canonical encodings and sha256 digests.

Every key in flyte-build is the sha256 of a canonical JSON encoding: sorted
keys, no whitespace, UTF-8. That encoding depends on nothing but the values,
so keys agree across processes, PYTHONHASHSEEDs, machines and clock times.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_of(value: Any) -> str:
    """The hex sha256 of a value's canonical encoding."""
    return sha256_hex(canonical_json(value))


def file_sha256(path: str | Path) -> tuple[str, int]:
    """Hex sha256 and size of a file's bytes."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def as_digest(hex_: str) -> str:
    return f"sha256:{hex_}"


def strip_digest(digest: str) -> str:
    return digest.split(":", 1)[1] if digest.startswith("sha256:") else digest
