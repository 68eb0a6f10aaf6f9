"""A build's action entries in one shared object, so a fresh machine reads one
object instead of one per target.

A fresh CI machine whose shared cache holds every target still asked the store
for each target's action entry and then each blob, one after the other (101
round trips for 50 bundles). A writer now also publishes, after a build where
every target succeeded, one "build manifest": every target's action entry,
under a key of the discovery's content key (every candidate's digest and the
discovery settings, see `shared_discovery`), its witnesses' key (what the
modules read besides themselves), the targets asked for and flyte-build's version. A reader whose discovery came with that content key
reads the manifest before the engine runs, hands its entries to the shared
cache, and starts downloading the blobs they name, several at once.

A manifest is only a transport. The engine still computes every action key
from the files here, and `SharedCache.fetch` checks the entry the manifest
carries under that key exactly as one read from `ac/<key>`: the schema (the
entry must name that very key), the rule's shape, the signature where the
reader holds verify keys or the rule needs one. An entry that fails, or a key
the manifest lacks (another config, another machine's flags), is read from
`ac/` as before. Blobs are verified against their digest before they get a
name in the local store, prefetched or not.

Layout: `manifest/<2 hex>/<key>.json.gz` under the shared prefix, zlib-
compressed canonical JSON `{"format", "key", "entries": {action key: entry}}`.
A manifest is rewritten when a build made other entries than it holds.
"""

from __future__ import annotations

import json
import zlib

from ..__about__ import __version__
from ..hashing import canonical_json, key_of
from .action_entry import HEX64, ActionEntry, BadEntry
from .documents import Bounds, load_document

FORMAT = 1
MAX_STORED = 16 << 20  # a stored manifest larger than this is not read
BOUNDS = Bounds(max_bytes=64 << 20)  # nor inflated or parsed past these (see `stores.documents`)
MAX_ENTRIES = 50_000


def key(content_key: str, addresses: list[str], witness: str = "") -> str:
    # the witness key: what the modules read besides themselves (STAGE, data files)
    # decides images and specs, so a STAGE=prod machine reads another manifest
    return key_of({"build-manifest": FORMAT, "tool": __version__, "discovery": content_key,
                   "witness": witness, "targets": sorted(addresses)})


def rel_of(key_: str) -> str:
    return f"manifest/{key_[:2]}/{key_}.json.gz"


def _manifest_key(ws, addresses: list[str]) -> str | None:
    shared = ws.cache.shared
    if shared is None or shared.offline or not ws.discovery.content_key:
        return None
    return key(ws.discovery.content_key, addresses, ws.discovery.witness)


def prefetch(ws, addresses: list[str]) -> dict[str, bytes]:
    """Read the manifest for this build, offer its entries to the shared cache
    and start fetching the blobs of the targets being built (see `_wanted`);
    the entries it held, by action key (empty when there is none, or it was
    refused)."""
    key_ = _manifest_key(ws, addresses)
    if key_ is None:
        return {}
    shared, stats = ws.cache.shared, ws.cache.stats
    rel = rel_of(key_)
    data = shared.read_document(rel, MAX_STORED, stats)
    if data is None:
        return {}
    try:
        entries = _entries(data, key_)
    except (ValueError, zlib.error) as exc:
        shared.refuse_document(rel, f"unreadable build manifest: {exc}", stats)
        return {}
    shared.count_down(stats, len(data))
    held = {k: canonical_json(e) for k, e in entries.items()}
    # the schema check `fetch` makes on an entry from ac/ (ActionEntry.parse), made
    # once here: an entry that fails it is not offered, and fetch reads ac/ instead
    offered = {}
    for k, raw in held.items():
        try:
            offered[k] = ActionEntry.parse(k, raw)
        except BadEntry:
            continue
    try:
        blobs = _wanted(offered.values(), set(ws.graph.closure(addresses)))
    except ValueError as exc:
        shared.refuse_document(rel, f"build manifest: {exc}", stats)
        return {}
    shared.offer(offered)
    shared.prefetch(blobs, ws.store, stats)
    return held


MAX_PREFETCH_BLOB = 1 << 30  # a larger blob is fetched when its entry is used, not ahead
MAX_PREFETCH_TOTAL = 256 << 20  # nor are more bytes than this fetched ahead, all blobs together


def _wanted(entries, building: set[str], total: int = MAX_PREFETCH_TOTAL) -> list[tuple[str, int]]:
    """The blobs (digest, size) worth fetching ahead: those of the entries of
    targets this build runs, smallest first, at most `total` bytes together.
    A manifest names each target once (one action key per target and build);
    one naming a target twice was not written by flyte-build (ValueError).
    Whatever else a manifest names is never fetched: it made readers download
    every blob a writer listed (hundreds of MiB for a 1 KB build)."""
    seen: set[str] = set()
    blobs: dict[str, int] = {}
    for e in entries:
        if e.target in seen:
            raise ValueError(f"two entries for {e.target}")
        seen.add(e.target)
        if e.target in building:
            blobs.update((o.digest, o.size) for o in e.outputs if o.size <= MAX_PREFETCH_BLOB)
    out, used = [], 0
    for hex_, size in sorted(blobs.items(), key=lambda b: (b[1], b[0])):
        if used + size > total:
            break
        out.append((hex_, size))
        used += size
    return out


def settle(ws) -> None:
    """After the engine ran: prefetches it never asked for are cancelled or
    waited for, so every byte fetched is counted in `bytes_down`."""
    if ws.cache.shared is not None:
        ws.cache.shared.settle()


def _entries(data: bytes, key_: str) -> dict[str, dict]:
    doc = load_document(data, BOUNDS)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("key") != key_:
        raise ValueError("not a build manifest for this key")
    entries = doc.get("entries")
    if not (isinstance(entries, dict) and len(entries) <= MAX_ENTRIES
            and all(isinstance(k, str) and HEX64.fullmatch(k) and isinstance(v, dict) for k, v in entries.items())):
        raise ValueError("bad entries")
    return entries


def publish(ws, addresses: list[str], results, had: dict[str, bytes]) -> None:
    """After a build where every target succeeded: publish its entries (signed
    when this writer holds a key) unless the manifest there holds these very
    entries. Comparing the entries, not only their keys, is what replaces a
    manifest whose entry was refused (tampered, or signed by another key) and
    rebuilt here: otherwise every later reader would meet the same bad entry."""
    key_ = _manifest_key(ws, addresses)
    shared = ws.cache.shared
    if key_ is None or shared.read_only or not results or not all(r.ok for r in results):
        return
    entries = {}
    for r in results:
        if not r.key or not ws.rules[r.kind].cacheable:
            continue
        entry = ws.store.get_action(r.key)
        if entry is None:
            return  # not kept here (a rule that stores nothing): no complete manifest
        if shared.signer is not None:
            entry = shared.signer.sign(entry)
        entries[r.key] = json.loads(entry.to_json())
    if not entries or {k: canonical_json(e) for k, e in entries.items()} == had:
        return
    doc = {"format": FORMAT, "key": key_, "entries": entries}
    shared.publish_document(rel_of(key_), zlib.compress(canonical_json(doc), 6), ws.cache.stats, replace=bool(had))
