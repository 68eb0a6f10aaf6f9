"""bundle:<env> — the environment's code as a deterministic .tar.gz.

Its files follow the env's copy style: `loaded_modules` (its import closure
under the root, lazy imports included), `all` (every file under the root less
the ignores), plus the env's `include` entries; `none` makes no bundle. The
archive is content-addressed: its name is the sha256 of its bytes.
"""

from __future__ import annotations

from flyte_build import archive
from flyte_build.rule_api import Inputs, Produced, Request, Rule

from . import upload

VERSION = "2"  # 2: members deflated one by one (see archive.write_tar_gz)


def applies(env, ctx) -> bool:
    # copy style none has a bundle only for the env's `include` files, as flyte's
    return ctx.cfg.copy_style_for(env.name) != "none" or bool(env.include or ctx.cfg.include_for(env.name))


def inputs(env, ctx) -> Inputs:
    files = ctx.bundle_files(env)
    return Inputs(
        files=tuple(files.items()),
        params={"copy_style": ctx.cfg.copy_style_for(env.name), "format": "tar.gz/2"},
    )


def run(req: Request) -> Produced:
    out = req.workdir / "bundle.tar.gz"
    with open(out, "wb") as f:
        archive.write_tar_gz(f, ((fi.name, fi.path, fi.digest) for fi in req.files))
    return Produced(files=(("bundle.tar.gz", out),), meta={"files": len(req.files)})


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
)
