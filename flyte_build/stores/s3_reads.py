"""Reads from S3 through a plain botocore client, without s3fs.

A fresh CI machine whose shared cache holds everything only reads. s3fs
imports aiobotocore and aiohttp (about 0.9 s of CPU before the first request,
the largest fixed cost of such a build); a botocore client costs about half
of that and answers a ranged GET with the object's total size, so one request
both bounds and checks a blob. Writes still go through s3fs (`remote_stores`), made
only when something is written.

Where every setting is one `s3_plain` reads itself (the store's config, a
few AWS_* variables, no AWS config file), each read goes over the standard
library and botocore is never imported; anything else, and any answer that
module hands back, is botocore's, as follows.

Everything here is botocore's: credentials (the same chain s3fs's aiobotocore
uses, or the configured keys), region, endpoint (config `endpoint-url`, else
botocore's own AWS_ENDPOINT_URL(_S3) and config files), addressing, signing,
retries and timeouts, with the settings `remote._s3` gives s3fs.
"""

from __future__ import annotations

import re
import threading
from typing import Any

NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NotFound", "404"}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class S3Reads:
    """One bucket's reads. `call` errors: FileNotFoundError for a missing object
    or bucket, anything else raised as botocore raised it (the caller maps it).
    Each read goes over the standard library first where `s3_plain` can make it
    (botocore is then never imported), else, or when it hands a read back,
    through botocore."""

    def __init__(self, options, timeout: float):
        self._options = options
        self._timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()
        from . import s3_plain

        plain = s3_plain.settings(options.s3)
        self.plain = s3_plain.Client(plain, timeout) if plain is not None else None

    def _plain(self, method: str, bucket: str, key: str, headers: dict | None = None, limit: int = 0):
        """(status, headers, body) over the standard library, or None: botocore's to do
        (from then on for this store, so a redirect or an auth error is asked once)."""
        from .s3_plain import Fallback

        client = self.plain
        if client is None:
            return None
        try:
            return client.request(method, bucket, key, headers, limit)
        except Fallback:
            self.plain = None
            return None

    def client(self):
        with self._lock:
            if self._client is None:
                self._client = _make_client(self._options, self._timeout)
            return self._client

    def _call(self, name: str, **kwargs):
        from botocore.exceptions import ClientError

        try:
            return getattr(self.client(), name)(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            if str(err.get("Code")) in NOT_FOUND or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                raise FileNotFoundError(f"{kwargs.get('Bucket')}/{kwargs.get('Key', '')}") from None
            if err.get("Code") == "InvalidRange":
                raise _EmptyObject() from None
            raise

    def bucket_exists(self, bucket: str) -> None:
        """FileNotFoundError when the bucket does not exist."""
        got = self._plain("HEAD", bucket, "")
        if got is not None and got[0] in (200, 404):
            if got[0] == 404:
                raise FileNotFoundError(bucket)
            return
        self._call("head_bucket", Bucket=bucket)

    def size(self, bucket: str, key: str) -> int:
        got = self._plain("HEAD", bucket, key)
        if got is not None and got[0] in (200, 404) and (got[0] == 404 or "content-length" in got[1]):
            if got[0] == 404:
                raise FileNotFoundError(f"{bucket}/{key}")
            return int(got[1]["content-length"])
        return int(self._call("head_object", Bucket=bucket, Key=key)["ContentLength"])

    def get_range(self, bucket: str, key: str, start: int, end: int) -> tuple[bytes, int]:
        """(bytes `start`..`end`-1, or fewer where the object ends; the object's
        total size). The range bounds what the store sends."""
        got = self._plain("GET", bucket, key, {"Range": f"bytes={start}-{end - 1}"}, end - start)
        if got is not None:
            status, headers, body = got
            if status == 404:
                raise FileNotFoundError(f"{bucket}/{key}")
            if status == 416:
                return b"", self.size(bucket, key)
            m = _CONTENT_RANGE.fullmatch(headers.get("content-range") or "")
            if status == 206 and m:
                return body, int(m.group(3))
            if status == 200 and start == 0:  # the whole object: a store that ignores ranges
                return body, int(headers.get("content-length", len(body)))
        try:
            resp = self._call("get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        except _EmptyObject:
            # S3 answers a range on an empty object (or past its end) with 416
            return b"", self.size(bucket, key)
        with resp["Body"] as body:
            data = body.read(end - start + 1)
        m = _CONTENT_RANGE.fullmatch(resp.get("ContentRange") or "")
        total = int(m.group(3)) if m else start + len(data)
        return data, total


class _EmptyObject(Exception):
    pass


def _make_client(options, timeout: float):
    """A botocore S3 client with the settings `remote._s3` gives s3fs."""
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config

    o = options.s3
    session = botocore.session.Session(profile=o.get("profile") or None)
    config = dict(connect_timeout=min(timeout, 10.0), read_timeout=timeout,
                  retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=16)
    if o.get("anon"):
        config["signature_version"] = UNSIGNED
    kwargs: dict[str, Any] = {"config": Config(**config)}
    if o.get("endpoint-url"):
        kwargs["endpoint_url"] = o["endpoint-url"]
    if o.get("region"):
        kwargs["region_name"] = o["region"]
    if o.get("access-key-id"):
        kwargs["aws_access_key_id"] = o["access-key-id"]
        kwargs["aws_secret_access_key"] = o.get("secret-access-key")
    return session.create_client("s3", **kwargs)
