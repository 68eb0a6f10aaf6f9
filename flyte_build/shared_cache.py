"""The shared cache behind the local one (S3, GCS, file://) — see BUILD.md."""

from __future__ import annotations

from .errors import UserError


def open_shared(url: str, cfg, warn):
    raise UserError(f"--cache {url}: shared caches are not supported in this build yet")
