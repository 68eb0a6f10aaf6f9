"""A small client of a Remote Execution API v2 cache (CAS, ByteStream, Action Cache).

The server is any REAPI v2 service (BuildGrid, BuildBuddy, EngFlow, Buildbarn,
NativeLink, bazel-remote), reached as `grpc://HOST:PORT[/INSTANCE]` or, over
TLS, `grpcs://HOST[:PORT][/INSTANCE]`. The messages and stubs are generated
from the REAPI .proto files (see `reapi_proto/README.md`).

Every call carries a deadline (`timeout`; a transfer gets one more second per
MB), so a hung server fails one operation, never the build. NOT_FOUND is
`FileNotFoundError`; every other failure is `StoreUnavailable`, its message
scrubbed of the credential. The credential (a bearer token, or an API key in a
header such as `x-buildbuddy-api-key`) is read once from an environment
variable or a file, sent as call metadata and never printed or stored.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..config.settings import OBJECT_STORE_FIELD
from ..errors import UserError
from .remote_stores import REAPI_SCHEMES, StoreUnavailable

SCHEMES = REAPI_SCHEMES
BATCH_CAP = 4 << 20  # what most servers allow in one batch request (BuildGrid: 4,193,280 bytes)
BATCH_SLACK = 16 << 10  # room for the request's own fields around the blobs
CHUNK = 1 << 20  # one ByteStream message
MAX_MESSAGE = 16 << 20  # the largest message this client accepts from the server
HEADER = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Endpoint:
    """Where the server is and how to reach it; `credential` is never printed."""

    url: str
    target: str  # host:port
    instance: str
    tls: bool
    ca: bytes | None = None
    header: str = "authorization"
    credential: str | None = None

    def __repr__(self) -> str:  # a repr must not carry the credential into a message or log
        return f"Endpoint({self.url!r}, tls={self.tls}, header={self.header!r}, credential={'set' if self.credential else None})"


def endpoint(url: str, options: dict, what: str = "--cache") -> Endpoint:
    """Parse `url` and read the `reapi` table of the object-store settings. Bad
    input is a UserError naming the URL or the key."""
    parsed = urlparse(url)
    if parsed.scheme not in SCHEMES or not parsed.hostname:
        raise UserError(f"{what} {url}: expected grpc://HOST:PORT[/INSTANCE] or grpcs://HOST[:PORT][/INSTANCE]")
    if parsed.username or parsed.password:
        raise UserError(f"{what}: a grpc URL carries no credentials; set {OBJECT_STORE_FIELD}.reapi.token-env or token-file")
    try:
        port = parsed.port or (443 if parsed.scheme == "grpcs" else None)
    except ValueError:
        port = None
    if port is None:
        raise UserError(f"{what} {url}: no port (expected grpc://HOST:PORT[/INSTANCE])")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    table = f"{OBJECT_STORE_FIELD}.reapi"
    header = options.get("header", "authorization").lower()
    if not HEADER.fullmatch(header) or header.endswith("-bin"):
        raise UserError(f"Field {table}.header: {header!r} is not a gRPC metadata key (e.g. x-buildbuddy-api-key)")
    ca = None
    if options.get("ca-file"):
        ca = _read(options["ca-file"], f"{table}.ca-file")
    return Endpoint(url.rstrip("/"), f"{host}:{port}", parsed.path.strip("/"), parsed.scheme == "grpcs", ca, header,
                    _credential(options, table))


def _read(path: str, field_: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UserError(f"Field {field_}: cannot read {path}: {exc.strerror}") from None


def _credential(options: dict, table: str) -> str | None:
    """The secret from `token-env` (a variable's name) or `token-file`, or None."""
    if options.get("token-env") and options.get("token-file"):
        raise UserError(f"Field {table}: set token-env or token-file, not both")
    if options.get("token-env"):
        value = os.environ.get(options["token-env"], "").strip()
        if not value:
            raise UserError(f"Field {table}.token-env: ${options['token-env']} is not set")
        return value
    if options.get("token-file"):
        value = _read(options["token-file"], f"{table}.token-file").decode("utf-8", "replace").strip()
        if not value:
            raise UserError(f"Field {table}.token-file: {options['token-file']} is empty")
        return value
    return None


class Client:
    """One channel to one server, its stubs, and counts of what was asked."""

    def __init__(self, ep: Endpoint, timeout: float):
        import grpc

        from .reapi_proto import bytestream_pb2_grpc, remote_execution_pb2_grpc as rpc

        self.ep = ep
        self.timeout = timeout
        opts = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.enable_retries", 0)]
        if ep.tls:
            creds = grpc.ssl_channel_credentials(root_certificates=ep.ca)
            self.channel = grpc.secure_channel(ep.target, creds, options=opts)
        else:
            self.channel = grpc.insecure_channel(ep.target, options=opts)
        self.cas = rpc.ContentAddressableStorageStub(self.channel)
        self.ac = rpc.ActionCacheStub(self.channel)
        self.caps = rpc.CapabilitiesStub(self.channel)
        self.bytestream = bytestream_pb2_grpc.ByteStreamStub(self.channel)
        self.metadata = _metadata(ep)
        self.max_batch = BATCH_CAP
        self.calls: dict[str, int] = {}
        self.bytestream_bytes = {"read": 0, "written": 0}
        self._lock = threading.Lock()

    # -- calls -------------------------------------------------------------
    def call(self, name: str, method, request, size: int = 0):
        """One unary call under its deadline, its failures as the module says."""
        self.count(name)
        try:
            return method(request, timeout=self.timeout + size / 1e6, metadata=self.metadata)
        except Exception as exc:
            raise self.error(name, exc) from None

    def error(self, name: str, exc: Exception) -> Exception:
        import grpc

        if isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.NOT_FOUND:
            return FileNotFoundError(f"{self.ep.url}: {name}: not found")
        if isinstance(exc, grpc.RpcError):
            text = f"{exc.code().name}: {exc.details()}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        return StoreUnavailable(self.scrub(f"{self.ep.url}: {name}: {text}"))

    def scrub(self, text: str) -> str:
        secret = self.ep.credential
        return text.replace(secret, "********") if secret else text

    def count(self, name: str) -> None:
        """One more call of `name` (a streaming call counts itself here)."""
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def moved(self, direction: str, n: int) -> None:
        """`n` more bytes through ByteStream ("read" or "written")."""
        with self._lock:
            self.bytestream_bytes[direction] += n

    def stats(self) -> dict:
        with self._lock:
            return {"protocol": "reapi-v2", "instance": self.ep.instance, "max_batch_bytes": self.max_batch,
                    "calls": dict(sorted(self.calls.items())), "bytestream_bytes": dict(self.bytestream_bytes)}

    def resource(self, kind: str, hex_: str, size: int) -> str:
        """A ByteStream resource name: `[instance/]blobs/H/S` to read, `[instance/]uploads/UUID/blobs/H/S` to write."""
        prefix = f"{self.ep.instance}/" if self.ep.instance else ""
        middle = f"uploads/{uuid.uuid4()}/" if kind == "write" else ""
        return f"{prefix}{middle}blobs/{hex_}/{size}"

    def close(self) -> None:
        self.channel.close()


def _metadata(ep: Endpoint) -> tuple:
    """The request headers: the credential (if any) and REAPI's tool details."""
    from .. import __about__
    from .reapi_proto import remote_execution_pb2 as re_pb

    tool = re_pb.RequestMetadata(tool_details=re_pb.ToolDetails(tool_name="flyte-build", tool_version=__about__.__version__))
    md = [("build.bazel.remote.execution.v2.requestmetadata-bin", tool.SerializeToString())]
    if ep.credential:
        value = f"Bearer {ep.credential}" if ep.header == "authorization" else ep.credential
        md.append((ep.header, value))
    return tuple(md)
