"""The shared cache behind the local one: a path, file://, s3://, gs:// or az:// prefix,
or a REAPI v2 cache at grpc:// or grpcs:// (see `reapi_store` for how this layout maps onto it).

Layout under the prefix (the same as the local cache, see BUILD.md):

    cas/sha256/<2 hex>/<64 hex>    blobs, named by the sha256 of their bytes
    ac/<2 hex>/<64 hex>.json       action key -> its outputs' digests and sizes
    discovery/<2 hex>/<64 hex>.json  a discovery result under its content key
                                   (see `discovery`), checked there before use

Writers publish every blob before the action entry that names it, each
create-only (see `remote_stores`), so an entry a reader finds always names blobs
that exist. Readers trust nothing: a blob is downloaded to a temporary file
in the local store, hashed, and renamed into place only if it hashes to its
name. A corrupt blob or entry is refused and counted, the target is rebuilt,
and the rebuilt result overwrites the bad object (the one case where a
write is not create-only).

Trust (see BUILD.md, "Trust and the shared cache"): every entry is checked
against the schema (`action_entry.ActionEntry.parse`) and read with bounds (entry
size, each blob's declared size, regular files only on a local path). A
reader holding verify keys refuses entries without a good signature by one
of them; a reader without keys still refuses entries of rules whose results
it cannot check against its own inputs (an image's pin, specs, a pex) unless
signed and verified; a rule that can check them (a bundle, member by member)
does so before the entry is kept, keys or not. A read-only cache is never written.

A store that cannot be reached (refused, timed out, no bucket, no
credentials) costs one warning; the run then leaves it alone and goes on
with the local cache. With `cache-required` it is an error instead.
"""

from __future__ import annotations

import os
import threading
import zlib

from .. import atomic
from ..config.settings import Config
from ..errors import BuildFailed
from ..hashing import file_sha256
from .remote_stores import REAPI_SCHEMES, BadObject, StoreOptions, StoreUnavailable, Root, open_root
from .signing import Signer, Verifier, load_signer, load_verifier
from .action_entry import MAX_ENTRY_BYTES, ActionEntry, BadEntry
from .documents import Bounds, inflate, parse, unseal
from .local_store import LocalStore


PREFETCH_JOBS = 8  # blobs downloaded at once: each is mostly a round trip


def blob_rel(hex_: str) -> str:
    return f"cas/sha256/{hex_[:2]}/{hex_}"


def action_rel(key: str) -> str:
    return f"ac/{key[:2]}/{key}.json"


class SharedCache:
    def __init__(self, root: Root, warn, required: bool = False, read_only: bool = False,
                 signer: Signer | None = None, verifier: Verifier | None = None):
        self.root = root
        self.url = root.url
        self._warn = warn
        self.required = required
        self.read_only = read_only
        self.signer = signer
        self.verifier = verifier
        self.offline = False
        self._bad: set[str] = set()  # objects found corrupt this run: the next publish replaces them
        self._lock = threading.Lock()
        self._offered: dict[str, ActionEntry] = {}  # action key -> schema-checked entry a build manifest carried
        self._inflight: dict[str, object] = {}  # blob digest -> the Future of its prefetch

    # -- faults ----------------------------------------------------------
    def _unavailable(self, exc: StoreUnavailable, stats) -> None:
        if self.required:
            raise BuildFailed(f"shared cache unavailable (cache-required): {exc}")
        with self._lock:
            if self.offline:
                return
            self.offline = True
        msg = f"shared cache unavailable, going on with the local cache: {exc}"
        if stats is not None:
            stats.warnings.append(msg)
        self._warn(msg)

    def _corrupt(self, rel: str, why: str, stats) -> None:
        with self._lock:
            self._bad.add(rel)
            stats.corrupt += 1
        stats.warnings.append(f"shared cache: refused {self.root.uri(rel)} ({why}); rebuilding it")

    # -- reading ---------------------------------------------------------
    def fetch(self, key: str, local: LocalStore, stats, needs_signature: bool = False, accept=None,
              verify=None) -> ActionEntry | None:
        """The entry for `key` with every output verified into `local`, else None.
        `needs_signature`: refuse the entry unless it is signed and verified, even
        when this reader holds no verify keys (results that reach a deploy).
        `verify({output name: path})`: why the outputs are not what this reader's
        own inputs make (a bundle is checked member by member), or None; checked
        keys or not, since a signature says who wrote an entry, not that it is right."""
        if self.offline:
            return None
        if needs_signature and self.verifier is None:
            return None  # nothing could vouch for it: the rule finds its own result
        try:
            entry, down = self._entry(key, stats, accept)
            if entry is None:
                return None
            for out in entry.outputs:
                got = self._blob(out.digest, out.size, local, stats)
                if got is None:
                    return None
                down += got
            why = verify({o.name: local.blob_path(o.digest) for o in entry.outputs}) if verify else None
            if why is not None:
                self._corrupt(action_rel(key), f"its {entry.target} is not what the inputs here make: {why}", stats)
                self.count_down(stats, down)
                return None
            local.put_action(entry)
        except StoreUnavailable as exc:
            self._unavailable(exc, stats)
            return None
        with self._lock:
            stats.bytes_down += down
        return entry

    def _entry(self, key: str, stats, accept) -> tuple[ActionEntry | None, int]:
        """(the checked entry for `key`, bytes read). An entry offered by a build
        manifest goes through the same checks as one read from `ac/`; one that
        fails them is read from `ac/` instead (the manifest is only a transport)."""
        rel = action_rel(key)
        with self._lock:
            offered = self._offered.pop(key, None)
        if offered is not None and self._why_not(offered, accept) is None:
            return offered, 0
        try:
            data = self.root.read(rel, MAX_ENTRY_BYTES)
            entry = ActionEntry.parse(key, data)
        except FileNotFoundError:
            return None, 0
        except (BadObject, BadEntry) as exc:
            self._corrupt(rel, f"malformed action entry: {exc}", stats)
            return None, 0
        why = self._why_not(entry, accept)
        if why is not None:
            self._corrupt(rel, why, stats)
            return None, 0
        return entry, len(data)

    def _why_not(self, entry: ActionEntry, accept) -> str | None:
        """Why a schema-valid entry is unusable here (its rule's shape, its signature), or None."""
        why = accept(entry) if accept else None
        if why is None and self.verifier is not None:
            why = self.verifier.check(entry)
        return why

    def _blob(self, hex_: str, size: int, local: LocalStore, stats) -> int | None:
        """Bytes downloaded to have blob `hex_` verified in `local` (0: it was
        there, or a prefetch brought it), or None when the entry is unusable:
        the blob is corrupt there (counted) or gone (a miss)."""
        with self._lock:
            pending = self._inflight.get(hex_)
        if pending is not None:
            pending.exception()  # wait for it; whatever went wrong is found again below
        if local.has_blob(hex_, size) and local.verify_blob(hex_):
            return 0
        try:
            got = self._download(hex_, size, local)
        except BadObject as exc:
            self._corrupt(blob_rel(hex_), str(exc), stats)
            return None
        if got is None:
            self.count_down(stats, size)  # read in full (it had the declared size) before it failed
            self._corrupt(blob_rel(hex_), "bytes do not match the digest", stats)
            return None
        if got < 0:
            # the entry names a blob that is gone: a miss (and the next publish restores it)
            return None
        return got

    # -- batches (see build_manifest) ----------------------------------------
    def count_down(self, stats, n: int) -> None:
        with self._lock:
            stats.bytes_down += n

    def offer(self, entries: dict[str, ActionEntry]) -> None:
        """Action entries read in one batch and parsed under their keys
        (`ActionEntry.parse`): `fetch` takes each from here rather than reading
        `ac/<key>`, and checks the rest (the rule's shape, the signature) as if it had."""
        with self._lock:
            self._offered.update(entries)

    def prefetch(self, blobs: list[tuple[str, int]], local: LocalStore, stats) -> None:
        """Start downloading these blobs (digest, size) at once, each verified
        against its digest before it gets its name in `local`, as `fetch` does;
        `fetch` waits for those its entry names. Failures are left for `fetch`
        to meet and report."""
        if self.offline or not blobs:
            return
        from concurrent.futures import ThreadPoolExecutor

        def one(hex_: str, size: int) -> None:
            if local.has_blob(hex_, size):
                return
            try:
                got = self._download(hex_, size, local)
            except (BadObject, StoreUnavailable, OSError):
                return
            if got is None:
                got = size  # read in full, then refused: fetch meets it again and reports it
            if got > 0:
                self.count_down(stats, got)

        pool = ThreadPoolExecutor(max_workers=PREFETCH_JOBS, thread_name_prefix="flyte-build-prefetch")
        with self._lock:
            for hex_, size in dict.fromkeys(blobs):
                if hex_ not in self._inflight:
                    self._inflight[hex_] = pool.submit(one, hex_, size)
        pool.shutdown(wait=False)

    def settle(self) -> None:
        """Cancel the prefetches not started; wait for those running (their bytes
        are counted when they finish)."""
        with self._lock:
            pending = list(self._inflight.values())
            self._inflight.clear()
        for f in pending:
            if not f.cancel():
                f.exception()

    def _download(self, hex_: str, size: int, local: LocalStore) -> int | None:
        """Bytes fetched (-1: object missing; None: it did not hash to `hex_`)."""
        with atomic.staged(local.blob_path(hex_)) as tmp:
            try:
                self.root.get_file(blob_rel(hex_), tmp.path, size)
            except FileNotFoundError:
                return -1
            actual, n = file_sha256(tmp.path)
            if actual != hex_:
                return None
            tmp.publish()  # no fsync: a reader verifies the bytes, and a bad blob is fetched again
            return n

    # -- documents (discovery results) -------------------------------------
    def read_document(self, rel: str, max_bytes: int, stats) -> bytes | None:
        """The bytes under `rel`, or None (missing, over `max_bytes`, or the store
        is unreachable). The caller validates them: they are as untrusted as
        everything here."""
        if self.offline:
            return None
        try:
            return self.root.read(rel, max_bytes)
        except FileNotFoundError:
            return None
        except BadObject as exc:
            self._corrupt(rel, str(exc), stats)
            return None
        except StoreUnavailable as exc:
            self._unavailable(exc, stats)
            return None

    def refuse_document(self, rel: str, why: str, stats) -> None:
        self._corrupt(rel, why, stats)

    def read_signed_document(self, rel: str, stats, what: str, domain: bytes, check,
                             max_stored: int, bounds: Bounds) -> dict | None:
        """The JSON object under `rel` once `check(doc)` (which raises ValueError)
        accepts it and, where this reader holds verify keys, its `sig` is a trusted
        writer's signature over the rest under `domain`; else None, the object
        refused (counted, warned once, replaced by the next writer) as "`what`".
        With keys the signature is checked over the stored bytes before they are
        parsed (see `documents`): an unsigned document costs no parse."""
        data = self.read_document(rel, max_stored, stats)
        if data is None:
            return None
        try:
            raw = inflate(data, bounds.max_bytes)
            if self.verifier is not None:
                raw, sig = unseal(raw)
                why = self.verifier.check_document(domain, raw, sig)
                if why is not None:
                    self.refuse_document(rel, f"{what}: {why}", stats)
                    return None
            doc = parse(raw, bounds)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            doc.pop("sig", None)
            check(doc)
        except (ValueError, zlib.error) as exc:
            self.refuse_document(rel, f"unreadable {what}: {exc}", stats)
            return None
        return doc

    def publish_document(self, rel: str, data: bytes, stats, replace: bool = False) -> None:
        """Create-only, unless this run found the object there corrupt or the
        caller `replace`s it (a document that is not named by its content). A
        read-only cache is left alone."""
        if self.offline or self.read_only:
            return
        bad = rel in self._bad or replace
        try:
            if self.root.put_bytes(rel, data, create_only=not bad):
                with self._lock:
                    stats.bytes_up += len(data)
            with self._lock:
                self._bad.discard(rel)
        except StoreUnavailable as exc:
            self._unavailable(exc, stats)

    # -- writing ---------------------------------------------------------
    def publish(self, entry: ActionEntry, local: LocalStore, stats) -> None:
        """Upload the entry's blobs, then the entry (signed when this writer holds a
        key); skip what is already there. A read-only cache is left alone."""
        if self.offline or self.read_only:
            return
        if self.signer is not None:
            entry = self.signer.sign(entry)
        up = 0
        try:
            for out in entry.outputs:
                rel = blob_rel(out.digest)
                if self.root.put_content(rel, local.blob_path(out.digest), out.size, replace=rel in self._bad):
                    up += out.size
                with self._lock:
                    self._bad.discard(rel)
            rel = action_rel(entry.key)
            bad = rel in self._bad
            if bad or self.root.size(rel) is None:
                data = entry.to_json()
                if self.root.put_bytes(rel, data, create_only=not bad):
                    up += len(data)
                with self._lock:
                    self._bad.discard(rel)
        except StoreUnavailable as exc:
            self._unavailable(exc, stats)
        finally:
            with self._lock:
                stats.bytes_up += up


def open_shared(url: str, cfg: Config, warn) -> SharedCache | None:
    """The shared cache at `url`, probed once. Unreachable: one warning and None
    (the run uses the local cache), or BuildFailed under `cache-required`."""
    options = cfg.object_store or StoreOptions()
    if url.split("://", 1)[0] in REAPI_SCHEMES:
        from .reapi_store import open_reapi

        root = open_reapi(url, options)
    else:
        root = open_root(url, options, "--cache")
    required = cfg.cache_required
    signer = load_signer(cfg.cache_signing_key_file)
    verifier = load_verifier(tuple(cfg.cache_verify_keys))
    read_only = read_only_mode(cfg.cache_read_only, signer, verifier)
    try:
        root.probe()
    except StoreUnavailable as exc:
        if required:
            raise BuildFailed(f"shared cache unavailable (cache-required): {exc}") from None
        warn(f"shared cache unavailable, going on with the local cache: {exc}")
        return None
    return SharedCache(root, warn, required, read_only, signer, verifier)


def in_ci(environ=os.environ) -> bool:
    """$CI set as CI services set it (GitHub Actions, GitLab, CircleCI, Buildkite...)."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def read_only_reason(configured: bool | None, signer: Signer | None, verifier: Verifier | None,
                     environ=os.environ) -> str | None:
    """Why a run nobody told to leave the shared cache alone only reads it (None:
    it publishes, or was told either way): a laptop beside CI should hear so once."""
    if configured is not None or not read_only_mode(configured, signer, verifier, environ):
        return None
    if verifier is not None and in_ci(environ):
        return "it checks signatures (cache-verify-keys) but holds no signing key"
    return "not in CI ($CI is unset) and no signing key"


def read_only_mode(configured: bool | None, signer: Signer | None, verifier: Verifier | None, environ=os.environ) -> bool:
    """Whether this run leaves the shared cache alone. Explicit config or flag
    wins. Otherwise a run writes when it holds a signing key, or runs in CI with
    no verify keys to satisfy; everything else -- a laptop -- only reads."""
    if configured is not None:
        return configured
    if signer is not None:
        return False
    return not (in_ci(environ) and verifier is None)
