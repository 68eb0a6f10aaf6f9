"""Rendering an image spec (plain data from discovery) into a Dockerfile and its build context.

Pure: no Docker, no flyte import. `render()` turns the spec dict of
`model.EnvSpec.image` into the Dockerfile text and the exact list of files the
build context holds (context name -> absolute path). The image's content tag
is the hash of the base reference, that text, those files' digests, the build
args and the target platforms (`content_tag`), and nothing else.

Context names are fixed by where a file comes from, never by the machine:
`src/<root-relative path>` for files layers copy, `code/<name>` for code baked
in (copy style `none`), `deps/requirements.pex` for a PEX, `wheels/<layer>/<file>`
for the wheels of a `PythonWheels` layer (`with_local_v2`), and for
`from_dockerfile` images the files of the Dockerfile's directory, relative to
it, after its `.dockerignore` (Docker's own matching rules, dockerignore.py).

By concern: dockerignore.py (the matcher), shell_steps.py (RUN lines, quoting,
pip flags, secret mounts), flyte_base.py (the base and flyte's runtime recipe),
layers.py (one function per layer kind); this module renders a whole spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flyte_build.rule_api import UserError, drop_secrets, key_of

from .dockerignore import dockerfile_context, dockerignored, parse_dockerignore  # noqa: F401 (the image kind's API)
from .flyte_base import (  # noqa: F401 (FLYTE_USER_CMD, PIP_CACHE_MOUNT, runtime_recipe: the image kind's API)
    FLYTE_BASE, FLYTE_USER_CMD, FLYTE_USER_FOOTER, PIP_CACHE_MOUNT, base_for, creates_flyte_user, runtime_recipe,
    without_cache_mounts,
)
from .layers import PEX_NAME, POETRY_VERSION, UV_VERSION, Build, render_layer  # noqa: F401

TAG_LENGTH = 32


@dataclass(frozen=True)
class Options:
    base_images: dict = field(default_factory=dict)  # "debian" -> replacement base
    base_map: dict = field(default_factory=dict)  # any base URI -> replacement
    debian_recipe: str = "full"  # full | light
    build_args: dict = field(default_factory=dict)
    refs: dict = field(default_factory=dict)  # ref name -> URI (config `images` + --image)
    use_pex: bool = False  # install pip requirements from deps/requirements.pex
    bake: dict = field(default_factory=dict)  # name -> path: code baked in (copy style none)
    code_dir: str = "/root"
    # directories outside the root whose files a `with_uv_project` layer may
    # name (the project holding pyproject.toml when the root is its `src/`)
    project_dir: str | None = None
    allow_secrets: tuple[str, ...] = ()  # config `allow-secrets`: the build context is filtered like bundles


@dataclass(frozen=True)
class Rendered:
    """What to build. `dockerfile` is None for a plain reference (nothing to build)."""

    base: str | None
    dockerfile: str | None
    context: tuple[tuple[str, str], ...] = ()
    platforms: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()
    # BuildKit secrets the build needs: (id, env var, file) — where `docker build --secret`
    # reads each value (the env var first, then the file); never the values themselves
    secrets: tuple[tuple[str, str, str], ...] = ()


def content_tag(base: str | None, dockerfile: str, files: list[tuple[str, str]], build_args, platforms) -> str:
    """The tag: a hash of exactly what enters the build (files as (context name, hex sha256))."""
    doc = {
        "base": base,
        "dockerfile": dockerfile,
        "files": sorted([list(f) for f in files]),
        "build_args": sorted([list(a) for a in build_args]),
        "platforms": sorted(platforms),
    }
    return key_of(doc)[:TAG_LENGTH]


def _render_from_dockerfile(spec: dict, root: Path, opts: Options, where: str, platforms, build_args) -> Rendered:
    """`Image.from_dockerfile`: the user's Dockerfile (its FROM lines mapped by `base-map`)
    and the files of its directory after its `.dockerignore`."""
    rel = spec["dockerfile"]
    path = root / rel
    if rel.startswith("/") or not path.is_file():
        raise UserError(f"{where}: Image.from_dockerfile: {rel!r} is not a file under the root")
    if spec.get("layers"):
        names = ", ".join(layer.get("type", "?") for layer in spec["layers"])
        raise UserError(f"{where}: layers on top of Image.from_dockerfile are not supported ({names}); put them in {rel}")
    text = path.read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        m = re.match(r"^(\s*FROM\s+(?:--platform=\S+\s+)?)(\S+)(.*)$", line, re.IGNORECASE)
        if m and m.group(2) in opts.base_map:
            line = m.group(1) + opts.base_map[m.group(2)] + m.group(3)
        lines.append(line)
    # a build context is stored in the caches and sent to the engine: no secrets, no links out
    ctx_files, dropped = drop_secrets(dockerfile_context(path.parent), root, opts.allow_secrets)
    dockerfile = "\n".join(lines) + "\n"
    if opts.bake:
        dockerfile += f"COPY code/ {opts.code_dir.rstrip('/')}/\n"
        ctx_files.update({f"code/{n}": p for n, p in opts.bake.items()})
    froms = [m.group(1) for m in re.finditer(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", dockerfile, re.IGNORECASE | re.MULTILINE)]
    return Rendered(" ".join(froms) or None, dockerfile, tuple(sorted(ctx_files.items())), platforms, build_args, tuple(dropped))


def render(spec: dict, root: Path, opts: Options, where: str, list_folder: Callable[[str], dict[str, str]]) -> Rendered:
    """Render `spec` (an EnvSpec.image dict). `where` names the env in errors;
    `list_folder(rel)` returns the files under a root-relative folder (name -> path)."""
    platforms = tuple(spec.get("platform") or ())
    build_args = tuple(sorted(opts.build_args.items()))
    if spec.get("dockerfile"):
        return _render_from_dockerfile(spec, root, opts, where, platforms, build_args)
    base, after_from, recipe = base_for(spec, opts, where)
    layers = list(spec.get("layers") or ())
    if base is None:
        raise UserError(f"{where}: the image has no base image (use Image.from_debian_base or Image.from_base)")
    if not layers and not opts.bake and not after_from:
        return Rendered(base, None, (), platforms, build_args)
    b = Build(spec, root, opts, where, list_folder, recipe)
    b.out = [f"FROM {base}", *after_from]
    if (after_from or FLYTE_BASE.match(spec.get("base_image") or "")) and (layers or opts.bake):
        # flyte's builder starts every image with `USER root` (its runtime image ends
        # as `flyte`), and adds no `USER flyte` back unless the layers create that user
        b.out.append("USER root")
    for i, layer in enumerate(layers):
        render_layer(b, i, layer)
    if opts.bake:
        b.context.update({f"code/{n}": p for n, p in opts.bake.items()})
        b.out.append(f"COPY code/ {opts.code_dir.rstrip('/')}/")
    if creates_flyte_user(layers):
        # flyte's builder ends an image whose layers create the `flyte` user by switching to it
        b.out.extend(FLYTE_USER_FOOTER)
    if build_args:
        # declared so a Dockerfile step may use them; their values are in the tag
        b.out[1:1] = [f"ARG {k}" for k, _ in build_args]
    return Rendered(base, "\n".join(b.out) + "\n", tuple(sorted(b.context.items())), platforms, build_args,
                    tuple(b.warnings), b.secrets.records())
