"""A small, safe view of one object-store prefix (file://, s3://, gs://, az://) over fsspec.

Both the shared cache and bundle storage go through `open_root(url, options)`
and use only four operations, each chosen so concurrent writers and readers
on many machines cannot hurt each other:

- `size(rel)` asks the store itself (a HEAD), never a listing cache: the
  filesystems are made with `use_listings_cache=False` and
  `skip_instance_cache=True`, and the path is invalidated before every ask.
- `put_file(rel, src, create_only=True)` publishes in one step. On S3 and GCS
  a single PUT (or a completed multipart upload) is all-or-nothing, so a
  reader sees no object or the whole one; create-only uses `IfNoneMatch: *`
  (S3) and `ifGenerationMatch=0` (GCS), and "already exists" counts as
  success, since the key names the content. On Azure a block blob appears
  when its block list is committed (all or nothing) and create-only is
  `If-None-Match: *` (adlfs' `overwrite=False`). On a local path the bytes go to
  a temporary name in the destination directory and are hard-linked into
  place, which fails if the name exists (create-only) -- a half-written file
  never carries a real name.
- `read(rel)` and `get_file(rel, dest)` fetch; callers verify digests. On
  S3 they (and `size`, `probe`) go through a plain botocore client
  (`s3_reads`): s3fs and its aiohttp stack are imported only to write.

Every call on a network store runs under a deadline (`timeout`); any failure
other than "not found"/"already exists" becomes `StoreUnavailable`, which
callers turn into one warning.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from .. import atomic
from ..config.settings import OBJECT_STORE_FIELD as TABLE
from ..config.settings import StoreOptions  # noqa: F401 (the options a Root is opened with)
from ..errors import UserError
from ..hashing import file_sha256



class StoreUnavailable(Exception):
    """The store could not be reached, timed out, or refused a request."""


class BadObject(Exception):
    """An object that is not what its reader may accept: larger than declared or
    allowed, or (in a file:// store) not a regular file -- a symlink, FIFO or device."""


READ_CHUNK = 8 << 20  # one ranged GET: memory stays bounded whatever the object's size


def _open_regular(path: str) -> tuple[int, int]:
    """(fd, size) of a regular file, opened without following a final symlink
    and without blocking on a FIFO. FileNotFoundError when missing."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.islink(path):
            raise BadObject(f"{path} is a symlink") from None
        raise BadObject(f"{path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BadObject(f"{path} is not a regular file")
    return fd, st.st_size


def _real_dirs(base: str, rel: str) -> None:
    """Make `rel`'s parent directories under `base`, refusing (StoreUnavailable)
    any that is a symlink or not a directory: whoever can write a file:// store
    could otherwise point `cas/sha256/ab` anywhere, and the writer would write
    its blobs there. `base` itself is the user's (resolved when opened)."""
    os.makedirs(base, exist_ok=True)
    path = base
    for part in rel.split("/")[:-1]:
        path = f"{path}/{part}"
        try:
            os.mkdir(path)
            continue
        except FileExistsError:
            pass
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise StoreUnavailable(f"{path} is {what}: refusing to write through it")


AZURE_SCHEMES = ("az", "abfs", "abfss")
# a REAPI cache (`reapi_client`): named here so that choosing a store needs no gRPC client loaded
REAPI_SCHEMES = ("grpc", "grpcs")


# -- the store ------------------------------------------------------------------


@dataclass(frozen=True)
class Root:
    """One prefix of one store. `rel` paths use `/` and never start with it."""

    url: str  # as the user wrote it, without a trailing slash
    scheme: str  # file | s3 | gs | az
    base: str  # the filesystem path of the prefix (bucket/prefix, or a local dir); on Azure container/prefix
    make_fs: Callable[[], Any]  # the fsspec filesystem, made on first use: S3 reads never need it
    timeout: float
    s3: Any = None  # an s3_reads.S3Reads: how an s3:// root reads
    _made: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def fs(self):
        with _fs_lock:
            if "fs" not in self._made:
                self._made["fs"] = self.make_fs()
            return self._made["fs"]

    def uri(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if self.base else rel

    def _call(self, name: str, *args, deadline: float | None = None, **kwargs):
        method = getattr(self.fs, name)
        if getattr(self.fs, "async_impl", False):
            kwargs["timeout"] = deadline or self.timeout  # fsspec's sync() takes a deadline
        try:
            return method(*args, **kwargs)
        except (FileNotFoundError, FileExistsError):
            raise
        except Exception as exc:  # every transport, auth and timeout error of four libraries
            raise StoreUnavailable(f"{self.url}: {type(exc).__name__}: {exc}".rstrip(": ")) from None

    def _s3_call(self, name: str, *args):
        """An S3 read through botocore (see s3_reads), its failures as `_call`'s."""
        try:
            return getattr(self.s3, name)(*args)
        except FileNotFoundError:
            raise
        except Exception as exc:  # transport, auth and timeout errors of botocore
            raise StoreUnavailable(f"{self.url}: {type(exc).__name__}: {exc}".rstrip(": ")) from None

    def probe(self) -> None:
        """Raise StoreUnavailable unless the store answers and the bucket exists."""
        if self.scheme == "file":
            Path(self.base).mkdir(parents=True, exist_ok=True)
            return
        bucket = self.base.split("/", 1)[0]
        try:
            if self.s3 is not None:
                self._s3_call("bucket_exists", bucket)
                return
            self.fs.invalidate_cache(bucket)
            self._call("info", bucket)
        except FileNotFoundError:
            raise StoreUnavailable(f"{self.url}: bucket {bucket!r} does not exist") from None

    def size(self, rel: str) -> int | None:
        """The object's size, or None when it does not exist -- asked of the store."""
        path = self._path(rel)
        if self.scheme == "file":
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return None
        if self.s3 is not None:
            try:
                return self._s3_call("size", *path.split("/", 1))
            except FileNotFoundError:
                return None
        self.fs.invalidate_cache(path)
        try:
            info = self._call("info", path)
        except FileNotFoundError:
            return None
        if info.get("type") == "directory":
            return None
        return int(info.get("size") or 0)

    def read(self, rel: str, max_bytes: int) -> bytes:
        """The object's bytes; FileNotFoundError when it does not exist, BadObject
        when it is over `max_bytes` (or, on a local path, not a regular file)."""
        path = self._path(rel)
        if self.scheme == "file":
            fd, size = _open_regular(path)
            with os.fdopen(fd, "rb") as f:
                data = f.read(max_bytes + 1)
        elif self.s3 is not None:
            data, _ = self._s3_call("get_range", *path.split("/", 1), 0, max_bytes + 1)
        else:
            # a range bounds what the store sends, whatever the object's size
            data = self._call("cat_file", path, start=0, end=max_bytes + 1)
        if len(data) > max_bytes:
            raise BadObject(f"{self.uri(rel)} is over {max_bytes} bytes")
        return data

    def get_file(self, rel: str, dest: Path, size: int) -> None:
        """Download to `dest` (a temporary name the caller owns) an object that
        must be exactly `size` bytes: BadObject, having read at most `size`
        bytes, when it is not (or, on a local path, is not a regular file)."""
        path = self._path(rel)
        if self.scheme == "file":
            fd, actual = _open_regular(path)
            with os.fdopen(fd, "rb") as s, open(dest, "wb") as d:
                if actual != size:
                    raise BadObject(f"{self.uri(rel)} is {actual} bytes, the entry says {size}")
                left = size + 1  # one byte more tells a file that grew
                while left and (chunk := s.read(min(left, 1 << 20))):
                    d.write(chunk)
                    left -= len(chunk)
            if left == 0:
                raise BadObject(f"{self.uri(rel)} is over {size} bytes")
            return
        if self.s3 is not None and size > 0:
            return self._s3_get_file(rel, dest, size)
        have = self.size(rel)
        if have is None:
            raise FileNotFoundError(path)
        if have != size:
            raise BadObject(f"{self.uri(rel)} is {have} bytes, the entry says {size}")
        with open(dest, "wb") as d:
            # ranged reads, never past the declared size: a swapped object cannot make us fetch more
            for start in range(0, size, READ_CHUNK):
                end = min(start + READ_CHUNK, size)
                # a large chunk may take longer than one request's deadline; allow ~1 MB/s
                chunk = self._call("cat_file", path, start=start, end=end, deadline=self.timeout + (end - start) / 1e6)
                if len(chunk) != end - start:
                    raise BadObject(f"{self.uri(rel)} changed while it was read")
                d.write(chunk)

    def _s3_get_file(self, rel: str, dest: Path, size: int) -> None:
        """`get_file` on S3 without a HEAD: each ranged GET names the object's
        total size, checked on the first."""
        bucket, key = self._path(rel).split("/", 1)
        with open(dest, "wb") as d:
            for start in range(0, size, READ_CHUNK):
                end = min(start + READ_CHUNK, size)
                # the first range asks one byte more than it needs: whatever the store says, at most that comes
                chunk, total = self._s3_call("get_range", bucket, key, start, end + (start == 0 and end == size))
                if total != size:
                    raise BadObject(f"{self.uri(rel)} is {total} bytes, the entry says {size}")
                if len(chunk) != end - start:
                    raise BadObject(f"{self.uri(rel)} changed while it was read")
                d.write(chunk)

    def put_file(self, rel: str, src: Path, create_only: bool = True) -> bool:
        """Publish `src` under `rel` in one step. True if written; False if
        create-only found the object already there (which is success)."""
        path = self._path(rel)
        if self.scheme == "file":
            _real_dirs(self.base, rel)
            return atomic.copy_file(src, path, create_only)
        size = os.path.getsize(src)
        try:
            self._call("put_file", str(src), path, mode="create" if create_only else "overwrite",
                       deadline=self.timeout + size / 1e6)
        except FileExistsError:
            return False
        finally:
            self.fs.invalidate_cache(path)
        return True

    def put_content(self, rel: str, src: Path, size: int, replace: bool = False, digest: str | None = None) -> bool:
        """Publish `src` (`size` bytes) under `rel`, a name that is its content,
        unless an object of that size is there already (the same content) and,
        given its sha256 `digest`, hashes to it. An object of another size or
        digest is a truncated or foreign one and is replaced, as is one the
        caller found corrupt (`replace`). True if written."""
        if not replace:
            have = self.size(rel)
            if have == size and (digest is None or self.holds(rel, digest, size)):
                return False
            replace = have is not None
        return self.put_file(rel, src, create_only=not replace)

    def holds(self, rel: str, digest: str, size: int) -> bool:
        """Whether the object at `rel` is `size` bytes hashing to sha256 `digest`
        (read once, never past `size`)."""
        with tempfile.TemporaryDirectory(prefix="flyte-build-check-") as tmp:
            dest = Path(tmp) / "object"
            try:
                self.get_file(rel, dest, size)
            except (FileNotFoundError, BadObject):
                return False
            return file_sha256(dest)[0] == digest

    def put_bytes(self, rel: str, data: bytes, create_only: bool = True) -> bool:
        path = self._path(rel)
        if self.scheme == "file":
            _real_dirs(self.base, rel)
            return atomic.write_bytes(path, data, create_only)
        try:
            self._call("pipe_file", path, data, mode="create" if create_only else "overwrite")
        except FileExistsError:
            return False
        finally:
            self.fs.invalidate_cache(path)
        return True


def _strip(url: str) -> str:
    return url.rstrip("/") if len(url) > 1 else url


_roots: dict[tuple[str, str], Root] = {}
_roots_lock = threading.Lock()
_fs_lock = threading.Lock()


def open_root(url: str, options: StoreOptions | None = None, what: str = "--cache") -> Root:
    """Parse `url` (a path, file://, s3://bucket[/prefix], gs://bucket[/prefix],
    az:// or abfs://container[/prefix]) and make its filesystem. Bad URLs are UserErrors naming `what`. One Root
    per URL and options per process: making an S3 or GCS client costs a
    good part of a second, a HEAD on a reused one a few milliseconds."""
    options = options or StoreOptions()
    key = (url, repr(options))
    with _roots_lock:
        root = _roots.get(key)
        if root is None:
            root = _roots[key] = _open_root(url, options, what)
    return root


def _open_root(url: str, options: StoreOptions, what: str) -> Root:
    parsed = urlparse(url)
    scheme = parsed.scheme or "file"
    if scheme == "file" or (len(scheme) == 1 and url[1:3] in (":\\", ":/")):
        path = parsed.path if parsed.scheme == "file" else url
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise UserError(f"{what} {url}: a file:// URL names a local path (file:///abs/path)")
        base = str(Path(path).expanduser().resolve())
        def local_fs():
            from fsspec.implementations.local import LocalFileSystem

            return LocalFileSystem()

        return Root(_strip(url), "file", base, local_fs, options.timeout)
    s3 = None
    if scheme in ("s3", "s3a"):
        from .s3_reads import S3Reads

        fs = lambda: _s3(options)  # noqa: E731 (made when something is written)
        s3 = S3Reads(options, options.timeout)
        scheme = "s3"
    elif scheme in ("gs", "gcs"):
        fs = lambda: _gcs(options)  # noqa: E731 (made on first use: gcsfs takes seconds to import, a URL's check none)
        scheme = "gs"
    elif scheme in AZURE_SCHEMES:
        if not parsed.netloc.split("@", 1)[0]:
            raise UserError(f"{what} {url}: no container (expected {scheme}://CONTAINER[/PREFIX])")
        # abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PREFIX names the account too
        container, _, host = parsed.netloc.partition("@")
        fs = _azure(options, host.split(".", 1)[0] or None, what, url)
        base = (container + "/" + parsed.path.strip("/")).rstrip("/")
        return Root(_strip(url), "az", base, lambda: fs, options.timeout)
    else:
        # grpc:// is a REAPI cache (shared_cache opens it): it holds no objects Flyte's runtime can download
        only = " is a --cache only" if scheme in ("grpc", "grpcs") else ""
        raise UserError(f"{what} {url}: unsupported scheme {scheme!r}{only} (use a path, file://, s3://, gs://, az:// or abfs://)")
    if not parsed.netloc:
        raise UserError(f"{what} {url}: no bucket (expected {scheme}://BUCKET[/PREFIX])")
    base = (parsed.netloc + "/" + parsed.path.strip("/")).rstrip("/")
    if s3 is not None:
        return Root(_strip(url), scheme, base, fs, options.timeout, s3)
    return Root(_strip(url), scheme, base, fs, options.timeout)


def _s3(options: StoreOptions):
    import s3fs

    o = options.s3
    client_kwargs = {}
    # Without an explicit endpoint botocore reads AWS_ENDPOINT_URL(_S3) itself.
    if o.get("endpoint-url"):
        client_kwargs["endpoint_url"] = o["endpoint-url"]
    if o.get("region"):
        client_kwargs["region_name"] = o["region"]
    kwargs: dict[str, Any] = dict(
        client_kwargs=client_kwargs,
        skip_instance_cache=True,
        use_listings_cache=False,
        # one short attempt per request: an unreachable cache costs seconds, not minutes
        config_kwargs={
            "connect_timeout": min(options.timeout, 10.0),
            "read_timeout": options.timeout,
            "retries": {"max_attempts": 2, "mode": "standard"},
        },
    )
    if o.get("profile"):
        kwargs["profile"] = o["profile"]
    if o.get("access-key-id"):
        kwargs["key"] = o["access-key-id"]
        kwargs["secret"] = o.get("secret-access-key")
    if o.get("anon"):
        kwargs["anon"] = True
    fs = s3fs.S3FileSystem(**kwargs)
    fs.retries = 2  # s3fs's own retry loop (default 5, with back-off)
    return fs


def _gcs(options: StoreOptions):
    o = options.gcs
    emulator = o.get("endpoint-url") or os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        # gcsfs probes for hierarchical-namespace buckets over gRPC at import,
        # which an emulator never answers (a 60 s wait per call).
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import gcsfs

    kwargs: dict[str, Any] = dict(skip_instance_cache=True, use_listings_cache=False, requests_timeout=options.timeout)
    if o.get("endpoint-url"):
        kwargs["endpoint_url"] = o["endpoint-url"]
    if o.get("project"):
        kwargs["project"] = o["project"]
    if o.get("anon"):
        kwargs["token"] = "anon"
    elif o.get("token"):
        kwargs["token"] = o["token"]
    elif emulator:
        kwargs["token"] = "anon"  # emulators do not authenticate
    return gcsfs.GCSFileSystem(**kwargs)


def _azure(options: StoreOptions, url_account: str | None, what: str, url: str):
    """adlfs' filesystem (imported only for an Azure URL). Settings: the
    `azure` table, then the URL's account, then adlfs' own AZURE_STORAGE_*
    variables (connection string, account name and key, SAS token, service
    principal) and, with none of those, Azure's default credential chain."""
    import adlfs

    o = options.azure
    name = o.get("account-name") or url_account or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    conn = o.get("connection-string")
    if o.get("endpoint-url") and not conn:
        # an explicit blob endpoint (an emulator, a sovereign cloud): the SDK takes it in a connection string
        key = o.get("account-key") or os.environ.get("AZURE_STORAGE_ACCOUNT_KEY")
        sas = o.get("sas-token") or os.environ.get("AZURE_STORAGE_SAS_TOKEN")
        if not name or not (key or sas or o.get("anon")):
            raise UserError(f"{what} {url}: {TABLE}.azure.endpoint-url needs account-name and account-key "
                            "(or sas-token, or anon = true)")
        conn = f"BlobEndpoint={o['endpoint-url']};AccountName={name};"
        conn += f"AccountKey={key};" if key else f"SharedAccessSignature={sas.lstrip('?')};" if sas else ""
    kwargs: dict[str, Any] = dict(
        skip_instance_cache=True, use_listings_cache=False,
        timeout=max(1, int(options.timeout)), connection_timeout=max(1, int(min(options.timeout, 10.0))),
        read_timeout=max(1, int(options.timeout)),
    )
    if conn:
        kwargs["connection_string"] = conn
    else:
        if name:
            kwargs["account_name"] = name
        if o.get("account-key"):
            kwargs["account_key"] = o["account-key"]
        if o.get("sas-token"):
            kwargs["sas_token"] = o["sas-token"]
    if o.get("anon"):
        kwargs["anon"] = True
    try:
        return adlfs.AzureBlobFileSystem(**kwargs)
    except ValueError as exc:  # adlfs: no account name, a malformed connection string
        raise UserError(f"{what} {url}: {exc} (set {TABLE}.azure or AZURE_STORAGE_* variables)") from None
