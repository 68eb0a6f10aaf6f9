"""Bundle storage: where built bundles are uploaded for Flyte's runtime to download.

Each bundle goes to `<url>/<sha256 hex>.tar.gz`. The name is the content, so
an object already there with that size and digest is the same bundle: it is
not uploaded again (existence and size are asked of the store, the object is
read back and hashed, and an upload is create-only, so two machines racing
both succeed with one object). One of that size that does not hash to its
name -- planted by whoever can write the bucket, or damaged -- is replaced:
Flyte's runtime downloads whatever is at that name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flyte_build.rule_api import BuildFailed, StoreOptions, StoreUnavailable, open_root


@dataclass(frozen=True)
class Upload:
    remote: str  # the object's URI
    uploaded: bool  # False: it was already there
    size: int


def bundle_name(hex_: str) -> str:
    return f"{hex_}.tar.gz"


def upload(url: str, local_path: str | Path, hex_: str, options: StoreOptions | None = None) -> Upload:
    """Upload one bundle unless it is already stored. BuildFailed if the store fails."""
    root = open_root(url, options, "--storage")
    rel = bundle_name(hex_)
    size = Path(local_path).stat().st_size
    try:
        written = root.put_content(rel, Path(local_path), size, digest=hex_)
    except StoreUnavailable as exc:
        raise BuildFailed(f"--storage: cannot upload bundle {hex_[:12]}: {exc}") from None
    return Upload(root.uri(rel), written, size)


def publish(url: str, local_path: str | Path, hex_: str, options: StoreOptions | None = None) -> dict:
    """The bundle rule's `publish` hook: the fields a built bundle's record gains."""
    up = upload(url, local_path, hex_, options)
    return {"remote": up.remote, "uploaded": up.uploaded}


def upload_bundle(url: str, local_path: str | Path, hex_: str, options: StoreOptions | None = None) -> str:
    """Upload a bundle named by its sha256 `hex_`; returns its remote URI."""
    return upload(url, local_path, hex_, options).remote
