"""bundle:<env> — the environment's code as a deterministic .tar.gz.

Its files follow the env's copy style: `loaded_modules` (its import closure
under the root, lazy imports included), `all` (every file under the root less
the ignores), plus the env's `include` entries; `none` makes no bundle. The
archive is content-addressed: its name is the sha256 of its bytes.
"""

from __future__ import annotations

import os

from flyte_build.rule_api import Inputs, Produced, Request, Rule, archive_mismatch, write_tar_gz

from . import upload
from .files import bundle_files, has_bundle

VERSION = "2"  # 2: members deflated one by one (see archive.write_tar_gz)


def applies(env, view) -> bool:
    # copy style none has a bundle only for the env's `include` files, as flyte's
    return has_bundle(env, view)


def inputs(env, view) -> Inputs:
    files = bundle_files(env, view)
    return Inputs(
        files=tuple(files.items()),
        params={"copy_style": view.cfg.copy_style_for(env.name), "format": "tar.gz/2"},
    )


def run(req: Request) -> Produced:
    out = req.workdir / "bundle.tar.gz"
    with open(out, "wb") as f:
        write_tar_gz(f, ((fi.name, fi.path, fi.digest) for fi in req.files))
    return Produced(files=(("bundle.tar.gz", out),), meta={"files": len(req.files)})


def verify_shared(files, outputs) -> str | None:
    """A shared bundle is used only when it is, member for member, the archive
    `run` makes of these files (see `archive_check`): keys or not, the shared
    cache can then only save the time of building it."""
    members = []
    for fi in files:
        try:
            st = os.stat(fi.path)
        except OSError as exc:
            return f"{fi.name}: {exc.strerror}"
        members.append((fi.name, fi.digest, st.st_size, bool(st.st_mode & 0o111)))
    return archive_mismatch(outputs["bundle.tar.gz"], members)


RULE = Rule(
    kind="bundle",
    version=VERSION,
    description="the environment's code bundle (.tar.gz, named by its sha256)",
    inputs=inputs,
    run=run,
    applies=applies,
    default=True,
    outputs=(("bundle.tar.gz",),),
    artifacts=True,
    replayable=True,
    publish=upload.publish,
    verify_shared=verify_shared,
)
