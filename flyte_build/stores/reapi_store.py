"""The shared cache over REAPI v2: the object-store layout of `shared_cache`
mapped onto a CAS and an Action Cache, behind the same operations as
`remote.Root` (probe, size, read, get_file, put_content, put_bytes).

- `cas/sha256/<2>/<hex>`: the CAS blob `<hex>` (its size comes with every ask).
- `ac/<2>/<key>.json`, the action entries, and every other name (shared
  discovery results, build manifests, affected summaries): an ActionResult in
  the Action Cache under the digest of an Action whose Command is
  `flyte-build cache <name>`. Its output file `flyte-build/entry.json` (or
  `flyte-build/document`) holds the bytes the object stores hold under that
  name, as a CAS blob. An entry's ActionResult also names each of the entry's
  outputs (a bundle, an image pin) as an output file with its sha256 digest and
  size, so REAPI tools see the artifacts; the entry (with its signature, when
  the writer signs) stays the only thing a reader trusts, and an ActionResult
  whose output files disagree with it is refused.

Reads are bounded: an ActionResult with more output files than an entry may
have, or a named blob over the reader's limit, is refused before its bytes are
fetched; every blob read is hashed against its digest here or by the caller.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import reapi_blobs as blobs
from .action_entry import MAX_OUTPUTS, ActionEntry, BadEntry
from .reapi_client import Client, endpoint
from .remote_stores import BadObject, StoreOptions, StoreUnavailable

ENTRY_FILE = "flyte-build/entry.json"
DOCUMENT_FILE = "flyte-build/document"


class ReapiRoot:
    """One REAPI instance, used by `shared_cache.SharedCache` as it uses a `remote.Root`."""

    scheme = "grpc"

    def __init__(self, client: Client):
        self.client = client
        self.url = client.ep.url
        self.timeout = client.timeout

    def uri(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def stats(self) -> dict:
        return self.client.stats()

    def probe(self) -> None:
        blobs.capabilities(self.client)

    # -- blobs ---------------------------------------------------------------
    def get_file(self, rel: str, dest: Path, size: int) -> None:
        blobs.read_to(self.client, _blob_hex(rel), size, Path(dest))

    def put_content(self, rel: str, src: Path, size: int, replace: bool = False, digest: str | None = None) -> bool:
        """Upload unless the server holds the blob (asked with FindMissingBlobs); a
        blob this run found corrupt (`replace`) is sent again. True if sent."""
        hex_ = _blob_hex(rel)
        if not replace and hex_ not in blobs.missing(self.client, [(hex_, size)]):
            return False
        blobs.write(self.client, hex_, size, src=Path(src))
        return True

    # -- named objects (entries and documents) -----------------------------------
    def size(self, rel: str) -> int | None:
        """The named object's size, or None when the Action Cache has no result for it."""
        result = self.action_result(rel)
        if result is None:
            return None
        named = _named_file(result, rel)
        return named.digest.size_bytes if named is not None else None

    def read(self, rel: str, max_bytes: int) -> bytes:
        result = self.action_result(rel)
        if result is None:
            raise FileNotFoundError(self.uri(rel))
        if len(result.output_files) > MAX_OUTPUTS + 1:
            raise BadObject(f"{self.uri(rel)}: the ActionResult names {len(result.output_files)} output files")
        named = _named_file(result, rel)
        if named is None:
            raise BadObject(f"{self.uri(rel)}: the ActionResult has no {_file_of(rel)}")
        size = named.digest.size_bytes
        if size > max_bytes:
            raise BadObject(f"{self.uri(rel)} is over {max_bytes} bytes")
        data = named.contents if named.contents else self._named_blob(rel, named.digest.hash, size)
        if len(data) != size or hashlib.sha256(data).hexdigest() != named.digest.hash:
            raise BadObject(f"{self.uri(rel)}: its bytes do not match the digest the ActionResult names")
        if rel.startswith("ac/"):
            _check_outputs(rel, data, result)
        return data

    def _named_blob(self, rel: str, hex_: str, size: int) -> bytes:
        try:
            return blobs.read(self.client, hex_, size)
        except FileNotFoundError:
            raise BadObject(f"{self.uri(rel)}: the ActionResult names a blob the server does not hold") from None

    def put_bytes(self, rel: str, data: bytes, create_only: bool = True) -> bool:
        """Store `data` under `rel`: its blob (with the Action and Command that name
        it) in one batch, then the ActionResult -- unless `create_only` and one is
        there. True if written."""
        action, command = _action(rel)
        if create_only and self.action_result(rel) is not None:
            return False
        hex_ = hashlib.sha256(data).hexdigest()
        small = [(hashlib.sha256(b).hexdigest(), len(b), b) for b in (action, command)]
        if blobs.batchable(self.client, len(data) + len(action) + len(command)):
            blobs.write_batch(self.client, [(hex_, len(data), data), *small])
        else:
            blobs.write(self.client, hex_, len(data), data=data)
            blobs.write_batch(self.client, small)
        pb = blobs.pb()
        files = [pb.OutputFile(path=_file_of(rel), digest=blobs.digest(hex_, len(data)))]
        if rel.startswith("ac/"):
            files += [pb.OutputFile(path=o.name, digest=blobs.digest(o.digest, o.size)) for o in _entry(rel, data).outputs]
        request = pb.UpdateActionResultRequest(instance_name=self.client.ep.instance, action_digest=_digest_of(action),
                                               action_result=pb.ActionResult(output_files=files, exit_code=0))
        self.client.call("UpdateActionResult", self.client.ac.UpdateActionResult, request)
        return True

    def action_result(self, rel: str):
        """The ActionResult stored for `rel`, or None."""
        pb = blobs.pb()
        request = pb.GetActionResultRequest(instance_name=self.client.ep.instance, action_digest=_digest_of(_action(rel)[0]),
                                            inline_output_files=[_file_of(rel)])
        try:
            return self.client.call("GetActionResult", self.client.ac.GetActionResult, request)
        except FileNotFoundError:
            return None


def _blob_hex(rel: str) -> str:
    return rel.rsplit("/", 1)[-1]


def _file_of(rel: str) -> str:
    return ENTRY_FILE if rel.startswith("ac/") else DOCUMENT_FILE


def _named_file(result, rel: str):
    name = _file_of(rel)
    return next((f for f in result.output_files if f.path == name), None)


def _action(rel: str) -> tuple[bytes, bytes]:
    """(Action, Command) serialized, for the object named `rel`: the same bytes on
    every machine, so the Action's digest is the name's key in the Action Cache."""
    pb = blobs.pb()
    command = pb.Command(arguments=["flyte-build", "cache", rel], output_paths=[_file_of(rel)]).SerializeToString(deterministic=True)
    empty_dir = pb.Directory().SerializeToString(deterministic=True)
    action = pb.Action(command_digest=_digest_of(command), input_root_digest=_digest_of(empty_dir))
    return action.SerializeToString(deterministic=True), command


def _digest_of(data: bytes):
    return blobs.digest(hashlib.sha256(data).hexdigest(), len(data))


def _entry(rel: str, data: bytes) -> ActionEntry:
    return ActionEntry.parse(_blob_hex(rel).removesuffix(".json"), data)


def _check_outputs(rel: str, data: bytes, result) -> None:
    """BadObject when the ActionResult's artifact files are not the entry's outputs
    (a schema-invalid entry is left for the caller's parse to refuse)."""
    try:
        outputs = {(o.name, o.digest, o.size) for o in _entry(rel, data).outputs}
    except BadEntry:
        return
    files = {(f.path, f.digest.hash, f.digest.size_bytes) for f in result.output_files if f.path != ENTRY_FILE}
    if files != outputs:
        raise BadObject(f"{rel}: the ActionResult's output files are not the outputs its entry names")


def open_reapi(url: str, options: StoreOptions, what: str = "--cache") -> ReapiRoot:
    """The REAPI store at `url` (not yet asked anything: see `probe`). A new
    channel per run (per open): its counters are that run's, and a credential
    rotated in its file is read again."""
    return ReapiRoot(Client(endpoint(url, options.reapi, what), options.timeout))


__all__ = ["ReapiRoot", "open_reapi", "StoreUnavailable", "BadObject"]
