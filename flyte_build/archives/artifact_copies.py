"""Copying a build's artifacts out of the cache: `build --out DIR` and the hatch
target's directory share one layout, `DIR/<kind>/<env>-<sha256><ext>`.

The env in the name is what a user looks for (`ls dist/flyte/bundle/inference-*`);
the digest keeps the name tied to the bytes, so two envs whose bundles are
identical get a file each, and an unchanged tree is copied to the same names.
A copy of an env's earlier artifact (same kind, another digest) is removed when
its new one is written, so `<env>-*` never shows two candidates; the manifest
beside them lists exactly the run's targets.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from .. import atomic
from ..engine.executor import TargetResult
from ..errors import UserError
from ..hashing import file_sha256
from ..stores.action_entry import OUTPUT_NAME, is_hex64

# what an env may be called to become part of a file name (flyte's own rule is
# snake- or kebab-case; the name reaches us from discovery, so it is checked here)
ENV_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def artifact_name(env: str, digest: str, output_name: str) -> str:
    """`<env>-<sha256><ext>`, the extension being the output's (`.tar.gz`, `.pex`)."""
    ext = output_name[output_name.index("."):] if "." in output_name else ""
    return f"{env}-{digest}{ext}"


def materialize(results: list[TargetResult], store, out: Path) -> list[TargetResult]:
    """Copy each result's outputs to `out/<kind>/<env>-<sha256><ext>`; returns the
    results with `path` there (the first output's)."""
    moved = []
    for r in results:
        if not r.ok or not r.outputs:
            moved.append(r)
            continue
        written = [_copy(r, o, store, out) for o in r.outputs]
        _drop_superseded(out / r.kind, r.env, {p.name for p in written})
        moved.append(replace(r, path=str(written[0])))
    return moved


def _copy(r: TargetResult, o, store, out: Path) -> Path:
    # names and digests were checked by the entry schema (plain names, 64 hex);
    # checked again here because this is where they become a path
    if not (is_hex64(o.digest) and OUTPUT_NAME.fullmatch(o.name) and ".." not in o.name):
        raise UserError(f"{r.target}: refusing output {o.name!r}: not a plain file name")
    if not (ENV_NAME.fullmatch(r.env) and ".." not in r.env):
        raise UserError(f"{r.target}: refusing env name {r.env!r} as part of a file name")
    dest = out / r.kind / artifact_name(r.env, o.digest, o.name)
    # a file already there is kept only if its bytes are the output's (a same-size
    # corrupted copy from an earlier run would otherwise stay)
    if not (dest.is_file() and not dest.is_symlink() and file_sha256(dest) == (o.digest, o.size)):
        if not store.verify_blob(o.digest):
            raise UserError(f"{r.target}: cache blob {o.digest} is corrupt; run the build again")
        atomic.copy_file(store.blob_path(o.digest), dest)
    return dest


def _drop_superseded(folder: Path, env: str, keep: set[str]) -> None:
    """Remove this env's copies from earlier runs (another digest) in `folder`.
    The pattern needs the 64 hex right after `<env>-`, so env `ml` never takes
    `ml-training-<sha256>.tar.gz` for its own."""
    mine = re.compile(re.escape(env) + r"-[0-9a-f]{64}(\.[A-Za-z0-9_.+-]*)?")
    for p in folder.iterdir():
        if p.name not in keep and mine.fullmatch(p.name) and (p.is_file() or p.is_symlink()):
            p.unlink(missing_ok=True)  # a concurrent build into the same DIR may have removed it
