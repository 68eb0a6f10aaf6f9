"""Blobs in a REAPI v2 CAS: capabilities, FindMissingBlobs, and transfers that
take the batch calls for small blobs and ByteStream for large ones.

A read never takes more than the declared size (ByteStream's `read_limit` is
the size plus one byte, which tells a blob that is larger); the caller hashes
what it got (see `shared_cache`). Writes of blobs the server holds already are
skipped by the caller through `missing`.
"""

from __future__ import annotations

import io
from pathlib import Path

from .reapi_client import BATCH_CAP, BATCH_SLACK, CHUNK, Client
from .remote_stores import BadObject, StoreUnavailable

OK = 0
NOT_FOUND = 5
SHA256 = 1  # DigestFunction.Value.SHA256


def pb():
    from .reapi_proto import remote_execution_pb2

    return remote_execution_pb2


def digest(hex_: str, size: int):
    return pb().Digest(hash=hex_, size_bytes=size)


def capabilities(client: Client) -> None:
    """Ask the server what it offers: StoreUnavailable unless its cache takes
    sha256; the batch limit is kept (capped at 4 MiB, the common limit)."""
    re_pb = pb()
    caps = client.call("GetCapabilities", client.caps.GetCapabilities, re_pb.GetCapabilitiesRequest(instance_name=client.ep.instance))
    cache = caps.cache_capabilities
    functions = list(cache.digest_functions)
    if functions and SHA256 not in functions:
        names = ", ".join(re_pb.DigestFunction.Value.Name(f) for f in functions)
        raise StoreUnavailable(f"{client.ep.url}: the server's cache does not take sha256 digests (it takes {names})")
    limit = cache.max_batch_total_size_bytes
    client.max_batch = min(limit, BATCH_CAP) if limit > 0 else BATCH_CAP


def batchable(client: Client, size: int) -> bool:
    return size + BATCH_SLACK <= client.max_batch


def missing(client: Client, blobs: list[tuple[str, int]]) -> set[str]:
    """The digests (hex) of `blobs` the server does not hold."""
    re_pb = pb()
    request = re_pb.FindMissingBlobsRequest(instance_name=client.ep.instance, blob_digests=[digest(h, s) for h, s in blobs])
    response = client.call("FindMissingBlobs", client.cas.FindMissingBlobs, request)
    return {d.hash for d in response.missing_blob_digests}


def read(client: Client, hex_: str, size: int) -> bytes:
    """The blob's bytes (at most `size` + 1 of them): FileNotFoundError when the
    server does not hold it, BadObject when it is not `size` bytes."""
    if size > 0 and not batchable(client, size):
        data = b"".join(_stream(client, hex_, size))
    elif size == 0:
        return b""
    else:
        re_pb = pb()
        request = re_pb.BatchReadBlobsRequest(instance_name=client.ep.instance, digests=[digest(hex_, size)])
        response = client.call("BatchReadBlobs", client.cas.BatchReadBlobs, request, size)
        found = [r for r in response.responses if r.digest.hash == hex_]
        if not found or found[0].status.code == NOT_FOUND:
            raise FileNotFoundError(f"{client.ep.url}: blob {hex_}")
        if found[0].status.code != OK:
            raise StoreUnavailable(client.scrub(f"{client.ep.url}: BatchReadBlobs: {found[0].status.message or found[0].status.code}"))
        data = found[0].data
    if len(data) != size:
        raise BadObject(f"{client.ep.url}: blob {hex_} is {len(data)} bytes, the entry says {size}")
    return data


def read_to(client: Client, hex_: str, size: int, dest: Path) -> None:
    """`read` into the file `dest`, in chunks when the blob is large."""
    if size == 0 or batchable(client, size):
        dest.write_bytes(read(client, hex_, size))
        return
    got = 0
    with open(dest, "wb") as f:
        for chunk in _stream(client, hex_, size):
            got += len(chunk)
            f.write(chunk)
    if got != size:
        raise BadObject(f"{client.ep.url}: blob {hex_} is {got} bytes, the entry says {size}")


def _stream(client: Client, hex_: str, size: int):
    """ByteStream.Read's chunks, stopping one byte past `size`."""
    from .reapi_proto import bytestream_pb2

    client.count("ByteStream.Read")
    request = bytestream_pb2.ReadRequest(resource_name=client.resource("read", hex_, size), read_limit=size + 1)
    got = 0
    try:
        for response in client.bytestream.Read(request, timeout=client.timeout + size / 1e6, metadata=client.metadata):
            got += len(response.data)
            yield response.data
            if got > size:
                break
    except (FileNotFoundError, BadObject):
        raise
    except Exception as exc:
        raise client.error("ByteStream.Read", exc) from None
    client.moved("read", got)


def write(client: Client, hex_: str, size: int, src: Path | None = None, data: bytes | None = None) -> None:
    """Upload one blob from `src` or `data`: a batch call when it fits, else ByteStream."""
    if batchable(client, size):
        write_batch(client, [(hex_, size, data if data is not None else Path(src).read_bytes())])
        return
    from .reapi_proto import bytestream_pb2

    name = client.resource("write", hex_, size)

    def requests():
        offset = 0
        with open(src, "rb") if src is not None else io.BytesIO(data) as f:
            while True:
                chunk = f.read(CHUNK)
                last = offset + len(chunk) >= size
                yield bytestream_pb2.WriteRequest(resource_name=name if offset == 0 else "", write_offset=offset,
                                                  finish_write=last, data=chunk)
                offset += len(chunk)
                if last or not chunk:
                    return

    response = client.call("ByteStream.Write", client.bytestream.Write, requests(), size)
    if response.committed_size not in (size, -1):
        raise StoreUnavailable(f"{client.ep.url}: ByteStream.Write committed {response.committed_size} of {size} bytes")
    client.moved("written", size)


def write_batch(client: Client, blobs: list[tuple[str, int, bytes]]) -> None:
    """Upload small blobs (hex, size, bytes) in one BatchUpdateBlobs call."""
    re_pb = pb()
    request = re_pb.BatchUpdateBlobsRequest(instance_name=client.ep.instance, requests=[
        re_pb.BatchUpdateBlobsRequest.Request(digest=digest(h, s), data=d) for h, s, d in blobs])
    response = client.call("BatchUpdateBlobs", client.cas.BatchUpdateBlobs, request, sum(s for _, s, _ in blobs))
    bad = [r for r in response.responses if r.status.code != OK]
    if bad:
        raise StoreUnavailable(client.scrub(f"{client.ep.url}: BatchUpdateBlobs refused {bad[0].digest.hash}: "
                                            f"{bad[0].status.message or bad[0].status.code}"))

