"""The cache a build consults: the local store, then an optional shared one.

A local hit is verified (the blob's bytes must hash to its name) before it is
served. On a local miss the shared store is asked; a shared hit is downloaded,
verified, stored locally and reported as cached. New results go to the local
store and then, blobs before the entry that names them, to the shared store.
The shared side lives in `shared_cache`; anything it cannot reach costs one
warning and the build goes on locally (unless `cache-required`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .action_entry import ActionEntry
from .local_store import LocalStore


@dataclass
class CacheStats:
    local_hits: int = 0
    shared_hits: int = 0
    misses: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    corrupt: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dict(self.__dict__)


class Cache:
    def __init__(self, local: LocalStore, shared=None):
        self.local = local
        self.shared = shared  # a shared_cache.SharedCache, or None
        self.stats = CacheStats()
        self._lock = threading.Lock()

    def _count(self, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def refuse(self, why: str) -> None:
        """Count a malformed or untrusted entry and report it once."""
        with self._lock:
            self.stats.corrupt += 1
            if why not in self.stats.warnings:
                self.stats.warnings.append(why)

    def lookup(self, key: str, accept=None, needs_signature: bool = False,
               verify=None) -> tuple[ActionEntry | None, str | None]:
        """(entry, "local" | "shared") for a usable hit, else (None, None).
        `accept(entry)` returns why a schema-valid entry is still unusable (its
        rule's shape), or None; `needs_signature`, `verify` see `SharedCache.fetch`."""
        entry = self.local.get_action(key, on_bad=self.refuse)
        if entry is not None:
            why = accept(entry) if accept else None
            if why is not None:
                self.refuse(f"local cache: refused action entry {key[:12]} ({why}); rebuilding it")
            elif all(self.local.verify_blob(o.digest) for o in entry.outputs):
                self._count(local_hits=1)
                return entry, "local"
            else:
                self._count(corrupt=1)
            self.local.action_path(key).unlink(missing_ok=True)
        if self.shared is not None:
            entry = self.shared.fetch(key, self.local, self.stats, needs_signature, accept, verify)
            if entry is not None:
                self._count(shared_hits=1)
                return entry, "shared"
        self._count(misses=1)
        return None, None

    def stats_json(self) -> dict:
        """The run's counts and, when the shared store keeps its own (a REAPI
        server's calls per method), those under `remote`."""
        doc = self.stats.to_json()
        store_stats = getattr(getattr(self.shared, "root", None), "stats", None)
        if callable(store_stats):
            doc["remote"] = store_stats()
        return doc

    def record(self, entry: ActionEntry) -> None:
        self.local.put_action(entry)
        if self.shared is not None:
            self.shared.publish(entry, self.local, self.stats)
