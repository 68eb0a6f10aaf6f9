"""A revision's target summary (`affected.Snapshot`) through the shared cache.

`affected --since REV` on a fresh machine exported REV's tree, discovered its
environments and asked every target's rule for its inputs there: most of the
command's time. That summary is a function of the commit (a git sha names
its whole tree) and of the settings `affected._summary_key` holds (flyte-build's
version and rules, flyte's version, Python's, the selection, the flags,
flyte's config), none of them machine-specific: the first machine to evaluate
a revision publishes it, and every other asking about that revision reads it.

It decides which targets CI builds and deploys (a forged one hides a change),
so only a reader holding verify keys reads it at all, and uses it only when
signed by one of them, named by its own key and matching the schema below
field by field. It carries the witnesses the revision's commit does not decide
(variables its modules read, flyte's config files: `discovery_reads.outside_tree`),
which must hold here: a STAGE=prod machine never takes a STAGE=dev summary. A
summary that fails is refused (counted, warned once) and the revision is
evaluated here; one whose witnesses differ is a miss.

Layout: `affected/<2 hex>/<key>.json.gz` under the shared prefix, zlib-
compressed canonical JSON `{"format", "key", "snapshot", "witness"}`.
"""

from __future__ import annotations

import zlib

from ..discovery import reads as discovery_reads
from ..hashing import canonical_json
from .documents import Bounds, seal

FORMAT = 2  # 2: witnesses
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


def fetch(shared, stats, key_: str, root, digests) -> tuple[dict, dict] | None:
    """(the verified summary for `key_` (`Snapshot.to_json`'s shape), its witnesses), or None."""
    if shared.verifier is None:
        return None  # nothing here could vouch for its writer: not read at all

    def check(doc):
        if doc.get("format") != FORMAT or doc.get("key") != key_:
            raise ValueError("not a summary for this key")
        _check(doc.get("snapshot"))
        why = discovery_reads.shared_names_why_not(doc.get("witness"), root)
        if why is not None:
            raise ValueError(why)

    doc = shared.read_signed_document(rel_of(key_), stats, "affected summary", DOMAIN, check, MAX_STORED, BOUNDS)
    if doc is None or not discovery_reads.still_valid(doc["witness"], root, digests):
        return None
    return doc["snapshot"], doc["witness"]


def publish(shared, stats, key_: str, snap: dict, witness: dict, root) -> None:
    # unsigned, no reader would use it; nor check witnesses outside the root
    if shared.read_only or shared.offline or shared.signer is None:
        return
    if discovery_reads.shared_names_why_not(witness, root) is not None:
        return
    doc = {"format": FORMAT, "key": key_, "snapshot": snap, "witness": witness}
    sig = shared.signer.sign_document(DOMAIN, canonical_json(doc))
    shared.publish_document(rel_of(key_), zlib.compress(seal(doc, sig), 6), stats)
