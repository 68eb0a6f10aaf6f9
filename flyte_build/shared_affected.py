"""A revision's target summary (`affected.Snapshot`) through the shared cache.

`affected --since REV` on a fresh machine exported REV's tree, discovered its
environments and asked every target's rule for its inputs there: most of the
command's time. That summary is a function of the commit (a git sha names
its whole tree) and of the settings `affected._summary_key` holds (flyte-build's
version and rules, flyte's version, Python's, the selection, the flags,
flyte's config), none of them machine-specific: the first machine to evaluate
a revision publishes it, and every other asking about that revision reads it.

It decides which targets CI builds and deploys, so it is as untrusted as any
shared entry: it must name its own key and match the schema below field by
field before it is used, and a reader holding verify keys uses it only when
signed by one of them (as discovery results). A summary that fails is refused
(counted, warned once) and the revision is evaluated here.

Layout: `affected/<2 hex>/<key>.json.gz` under the shared prefix, zlib-
compressed canonical JSON `{"format", "key", "snapshot"}`.
"""

from __future__ import annotations

import zlib

from .hashing import canonical_json
from .stores.documents import Bounds, seal

FORMAT = 1
MAX_STORED = 16 << 20
BOUNDS = Bounds(max_bytes=64 << 20)  # see `stores.documents`
DOMAIN = b"flyte-build affected summary v1\x00"  # what a signature covers (see `signing`)


def rel_of(key_: str) -> str:
    return f"affected/{key_[:2]}/{key_}.json.gz"


def _strs(xs) -> bool:
    return isinstance(xs, list) and all(isinstance(x, str) for x in xs)


def _check(snap) -> None:
    """The shape `Snapshot.from_json` reads; anything else is refused before use."""
    if not isinstance(snap, dict):
        raise ValueError("not a summary")
    targets, env_files = snap.get("targets"), snap.get("env_files")
    if not isinstance(targets, dict) or not isinstance(env_files, dict):
        raise ValueError("bad targets")
    for addr, t in targets.items():
        if not (isinstance(addr, str) and isinstance(t, list) and len(t) == 6 and isinstance(t[0], str)
                and isinstance(t[1], str) and _strs(t[2]) and isinstance(t[3], str) and _strs(t[4])
                and (t[5] is None or isinstance(t[5], str))):
            raise ValueError(f"bad target {str(addr)[:80]!r}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env_files.items()):
        raise ValueError("bad environment files")
    if not isinstance(snap.get("config_key"), str) or not (snap.get("config_file") is None or isinstance(snap["config_file"], str)):
        raise ValueError("bad config fields")


def fetch(shared, stats, key_: str) -> dict | None:
    """The verified summary for `key_` (`Snapshot.to_json`'s shape), or None."""
    def check(doc):
        if doc.get("format") != FORMAT or doc.get("key") != key_:
            raise ValueError("not a summary for this key")
        _check(doc.get("snapshot"))

    doc = shared.read_signed_document(rel_of(key_), stats, "affected summary", DOMAIN, check, MAX_STORED, BOUNDS)
    return None if doc is None else doc["snapshot"]


def publish(shared, stats, key_: str, snap: dict) -> None:
    if shared.read_only or shared.offline:
        return
    doc = {"format": FORMAT, "key": key_, "snapshot": snap}
    sig = shared.signer.sign_document(DOMAIN, canonical_json(doc)) if shared.signer is not None else None
    shared.publish_document(rel_of(key_), zlib.compress(seal(doc, sig), 6), stats)
