"""AWS Signature Version 4 for the plain S3 reads (`s3_plain`): a GET or HEAD
with no query string and an empty body, signed as botocore's `S3SigV4Auth`
signs it (a signed empty payload, every header given, names lower-cased).

Why not botocore's signer: importing its auth module (and, through it,
urllib3) cost a fresh machine that only reads about 0.1-0.2 s of its start,
for a few lines of HMAC. tests/test_s3_plain.py holds this to botocore's own
signer, header for header, at fixed times.
"""

from __future__ import annotations

import hashlib
import hmac
import time

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sign(method: str, path: str, headers: dict, *, access_key: str, secret_key: str, token: str | None,
         region: str, now: float | None = None) -> dict:
    """`headers` (their `host` included) with x-amz-date, x-amz-content-sha256,
    the session token and Authorization added. `path` is the request's URI path
    as sent (already quoted: S3 signs it without normalising it)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    out = {k.lower(): v for k, v in headers.items()}
    out["x-amz-date"] = stamp
    out["x-amz-content-sha256"] = EMPTY_SHA256
    if token:
        out["x-amz-security-token"] = token
    names = sorted(out)
    canonical_headers = "".join(f"{n}:{' '.join(str(out[n]).split())}\n" for n in names)
    signed = ";".join(names)
    canonical = "\n".join([method.upper(), path, "", canonical_headers, signed, EMPTY_SHA256])
    scope = f"{stamp[:8]}/{region}/s3/aws4_request"
    to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    key = _hmac(f"AWS4{secret_key}".encode("utf-8"), stamp[:8])
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out["authorization"] = f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    return out
