"""S3 reads over the standard library's HTTP client, signed SigV4 (`sigv4`).

A fresh CI machine that only reads paid about 0.35 s of CPU to import
botocore and make a client (its service models, endpoint rules and
credential chain), then a few milliseconds per request: as much as the rest
of such a build's own work. When every setting comes from the store's config
or from the handful of environment variables read here, a read needs none of
that: a GET or HEAD over `http.client`, signed as botocore's `S3SigV4Auth`
signs it (`sigv4`; no botocore module is imported).

Anything else goes to botocore (`s3_reads`), which knows the rest of AWS's
rules: a named profile, credentials or settings from files, the instance's
role, any other `AWS_*` variable (FIPS, dual-stack, ...), no
region, a bucket name with dots on AWS's own endpoint. So does any answer
other than 200, 206, 404 or 416 (a redirect to another region, a throttle,
an auth error, a 5xx: botocore retries and explains), and any transport
error.
"""

from __future__ import annotations

import http.client
import os
import re
import threading
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from . import sigv4

# what this module reads; any other AWS_* variable may change what botocore would do
_KNOWN_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
              "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"}
EMPTY_SHA256 = sigv4.EMPTY_SHA256
_CONFIG_FILES = ("~/.aws/config", "~/.aws/credentials")
_OK = {200, 206, 404, 416}


class Fallback(Exception):
    """This read is botocore's to make (an answer or error this module leaves to it)."""


@dataclass(frozen=True)
class Plain:
    """How to reach and sign for one store, when the standard library can."""

    scheme: str  # http | https
    host: str  # host[:port] of the endpoint (without the bucket)
    base: str  # the endpoint URL's path, without a trailing slash
    virtual: bool  # bucket.host (AWS's own endpoint) rather than host/bucket
    region: str
    key: str | None  # None: unsigned (anonymous)
    secret: str | None
    token: str | None
    ca_bundle: str | None = None  # AWS_CA_BUNDLE: the certificates an https endpoint is checked against


def settings(s3_options: dict, environ=os.environ) -> Plain | None:
    """The plain settings for a store's `s3` options, or None when botocore must decide."""
    o = s3_options
    if o.get("profile") or any(k.startswith("AWS_") and k not in _KNOWN_ENV for k in environ):
        return None
    if any(os.path.exists(os.path.expanduser(p)) for p in _CONFIG_FILES):
        return None  # a config file may set a region, endpoint, addressing style or credentials
    region = o.get("region") or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    anon = bool(o.get("anon"))
    if o.get("access-key-id"):
        key, secret, token = o.get("access-key-id"), o.get("secret-access-key"), None
    else:
        key, secret, token = (environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY"),
                              environ.get("AWS_SESSION_TOKEN"))
    if not region or (not anon and not (key and secret)):
        return None
    if anon:
        key = secret = token = None
    endpoint = o.get("endpoint-url") or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    ca = environ.get("AWS_CA_BUNDLE") or None
    if not endpoint:
        return Plain("https", f"s3.{region}.amazonaws.com", "", True, region, key, secret, token, ca)
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return Plain(parts.scheme, parts.netloc, parts.path.rstrip("/"), False, region, key, secret, token, ca)


def _uri_path(p: Plain, bucket: str, key: str) -> tuple[str, str]:
    """(host, URI path) of an object (or of the bucket when `key` is "")."""
    if p.virtual:
        if "." in bucket or not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", bucket):
            raise Fallback("bucket name needs path-style addressing")
        return f"{bucket}.{p.host}", "/" + quote(key, safe="/~")
    return p.host, f"{p.base}/{quote(bucket, safe='~')}" + ("/" + quote(key, safe="/~") if key else "")


def signed_headers(p: Plain, method: str, host: str, path: str, headers: dict) -> dict:
    """`headers` with the SigV4 ones added (host, x-amz-date, x-amz-content-sha256,
    the session token, Authorization); unsigned for an anonymous store."""
    out = {**headers, "host": host, "x-amz-content-sha256": EMPTY_SHA256}
    if p.key is None:
        return out
    return sigv4.sign(method, path, out, access_key=p.key, secret_key=p.secret, token=p.token, region=p.region)


class Client:
    """Signed GETs and HEADs with one kept-alive connection per thread and host."""

    def __init__(self, plain: Plain, timeout: float):
        self.plain = plain
        self.timeout = timeout
        self._local = threading.local()

    def request(self, method: str, bucket: str, key: str, headers: dict | None = None, limit: int = 0):
        """(status, lower-cased headers, body of at most `limit` + 1 bytes); Fallback on
        a transport error or an answer botocore should handle."""
        host, path = _uri_path(self.plain, bucket, key)
        sent = signed_headers(self.plain, method, host, path, headers or {})
        try:
            conn = self._conn(host)
            conn.request(method, path, headers=sent)
            resp = conn.getresponse()
            ok = method == "GET" and resp.status in (200, 206)
            # an error's body is small; an object's is bounded here, whatever the store sends
            body = resp.read(limit + 1) if ok else resp.read(1 << 16)
            if not resp.isclosed():
                self._drop(host)  # more than was asked for: never read on
        except (OSError, http.client.HTTPException) as exc:
            self._drop(host)
            raise Fallback(f"{type(exc).__name__}: {exc}") from None
        if resp.status not in _OK:
            raise Fallback(f"HTTP {resp.status}")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body

    def _conn(self, host: str) -> http.client.HTTPConnection:
        conns = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(host)
        if conn is None:
            if self.plain.scheme == "https":
                import ssl

                conn = http.client.HTTPSConnection(host, timeout=min(self.timeout, 10.0),
                                                   context=ssl.create_default_context(cafile=self.plain.ca_bundle))
            else:
                conn = http.client.HTTPConnection(host, timeout=min(self.timeout, 10.0))  # the connect timeout
            conns[host] = conn
            conn.connect()
            conn.sock.settimeout(self.timeout)  # then each read's
        return conn

    def _drop(self, host: str) -> None:
        conn = self._local.__dict__.get("conns", {}).pop(host, None)
        if conn is not None:
            conn.close()
