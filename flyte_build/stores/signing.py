"""Signed action entries: who may write the shared cache, and how readers know.

A writer holding a signing key (an Ed25519 private key) signs every entry it
publishes; a reader holding the matching public key (config
`cache-verify-keys`, or $FLYTE_BUILD_CACHE_VERIFY_KEYS) refuses entries that
are unsigned, signed by another key, or altered after signing. Public-key
signatures rather than HMAC because the point is that readers cannot write:
a laptop holds only the public key (it can sit in the committed
pyproject.toml), CI holds the private one. See BUILD.md, "Trust and the
shared cache".

Keys are base64 of the raw 32 bytes (what `flyte-build cache keygen` prints).
The signature covers a domain tag and the entry's canonical bytes without
the signature, so neither an entry's key, target, outputs nor meta can be
changed, and a signature over something else cannot be replayed as an entry.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .action_entry import ActionEntry

ALG = "ed25519"
DOMAIN = b"flyte-build action entry v1\x00"
SIGNING_KEY_ENV = "FLYTE_BUILD_CACHE_SIGNING_KEY"
SIGNING_KEY_FILE_ENV = "FLYTE_BUILD_CACHE_SIGNING_KEY_FILE"
VERIFY_KEYS_ENV = "FLYTE_BUILD_CACHE_VERIFY_KEYS"


def _raw32(text: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{where}: not base64 (expected the 32-byte key `flyte-build cache keygen` prints)") from None
    if len(raw) != 32:
        raise UserError(f"{where}: a key is 32 bytes, this is {len(raw)} (use `flyte-build cache keygen`)")
    return raw


@dataclass(frozen=True)
class Signer:
    private: object  # cryptography's Ed25519PrivateKey
    public_b64: str

    def sign(self, entry: ActionEntry) -> ActionEntry:
        from dataclasses import replace

        return replace(entry, sig=self.sign_document(DOMAIN, entry.payload()))

    def sign_document(self, domain: bytes, payload: bytes) -> dict:
        """The signature of another kind of shared document (a discovery result),
        under its own domain tag so it can never pass for an action entry."""
        value = self.private.sign(domain + payload)
        return {"alg": ALG, "key": self.public_b64, "value": base64.b64encode(value).decode()}


@dataclass(frozen=True)
class Verifier:
    keys: dict  # public key base64 -> Ed25519PublicKey

    def check(self, entry: ActionEntry) -> str | None:
        """None when the entry carries a good signature by a trusted key, else why not."""
        return self.check_document(DOMAIN, entry.payload(), entry.sig)

    def check_document(self, domain: bytes, payload: bytes, sig) -> str | None:
        from cryptography.exceptions import InvalidSignature

        if sig is None:
            return "unsigned entry"
        if not (isinstance(sig, dict) and all(isinstance(sig.get(k), str) for k in ("alg", "key", "value"))):
            return "malformed signature"
        if sig["alg"] != ALG:
            return f"signature algorithm {sig['alg']!r}"
        key = self.keys.get(sig["key"])
        if key is None:
            return "signed by a key not in cache-verify-keys"
        try:
            key.verify(base64.b64decode(sig["value"], validate=True), domain + payload)
        except (InvalidSignature, binascii.Error, ValueError):
            return "bad signature"
        return None


def _public_b64(private) -> str:
    # the raw bytes without the serialization module (about 20 ms of imports a run)
    return base64.b64encode(private.public_key().public_bytes_raw()).decode()


def load_signer(key_file: str | None = None, environ=os.environ) -> Signer | None:
    """The signing key from $FLYTE_BUILD_CACHE_SIGNING_KEY, else the file named by
    $FLYTE_BUILD_CACHE_SIGNING_KEY_FILE or config `cache-signing-key-file`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    text, where = environ.get(SIGNING_KEY_ENV), f"${SIGNING_KEY_ENV}"
    if not text:
        path = environ.get(SIGNING_KEY_FILE_ENV) or key_file
        if not path:
            return None
        where = str(path)
        try:
            text = Path(path).expanduser().read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cache signing key {path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    private = Ed25519PrivateKey.from_private_bytes(_raw32(text, where))
    return Signer(private, _public_b64(private))


def load_verifier(config_keys: tuple[str, ...] = (), environ=os.environ) -> Verifier | None:
    """The trusted public keys: config `cache-verify-keys` plus $FLYTE_BUILD_CACHE_VERIFY_KEYS
    (comma- or space-separated). None when there are none."""
    named = [(k, "tool.hatch.build.targets.flyte.cache-verify-keys") for k in config_keys]
    named += [(k, f"${VERIFY_KEYS_ENV}") for k in environ.get(VERIFY_KEYS_ENV, "").replace(",", " ").split()]
    if not named:
        return None  # every build asks: without keys, cryptography is not even imported
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys = {}
    for text, where in named:
        raw = _raw32(text, where)
        keys[base64.b64encode(raw).decode()] = Ed25519PublicKey.from_public_bytes(raw)
    return Verifier(keys) if keys else None


def keygen() -> tuple[str, str]:
    """A new (private, public) key pair, each base64 of 32 raw bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode(), _public_b64(private)
