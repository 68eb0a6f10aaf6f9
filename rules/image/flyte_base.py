"""Which base an image starts FROM, and flyte's runtime recipe on a plain debian
Python (what flyte's released default image holds), as lines after FROM."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from flyte_build.rule_api import UserError

from .shell_steps import run_line, shell_quote

if TYPE_CHECKING:
    from .dockerfile import Options

# flyte's from_debian_base() starts from these; `docker.base-images.debian` replaces them
DEBIAN_BASE = re.compile(r"^(?:docker\.io/(?:library/)?)?python:(\d+)\.(\d+)-slim-bookworm$")
FLYTE_BASE = re.compile(r"^ghcr\.io/flyteorg/flyte:py(\d+)\.(\d+)(?:-v?(.+))?$")
# the toolchain layer of flyte's debian recipe; `debian-recipe = "light"` leaves it to the base
RECIPE_APT = ("build-essential", "ca-certificates")


def base_for(spec: dict, opts: Options, where: str) -> tuple[str | None, list[str], bool]:
    """(FROM reference, extra lines after FROM, whether flyte's debian recipe is in the layers)."""
    base = spec.get("base_image")
    ref = spec.get("ref_name")
    if ref:
        if ref not in opts.refs:
            raise UserError(
                f"{where}: Image.from_ref_name({ref!r}) is not resolved; pass `--image {ref}=URI` "
                f"or set `images = {{ {ref} = \"URI\" }}` in [tool.hatch.build.targets.flyte]"
            )
        return opts.refs[ref], [], False
    if base is None:
        return None, [], False
    if base in opts.base_map:
        return opts.base_map[base], [], bool(DEBIAN_BASE.match(base))
    m = DEBIAN_BASE.match(base)
    if m and "debian" in opts.base_images:
        return opts.base_images["debian"], [], True
    m = FLYTE_BASE.match(base)
    if m and "debian" in opts.base_images:
        # flyte's released default image, rebuilt on the configured debian base
        return opts.base_images["debian"], runtime_recipe(m.group(3), opts.debian_recipe), False
    return base, [], False


# What flyte's released default image (`ghcr.io/flyteorg/flyte:pyX.Y-vV`, built by
# flyte's maint_tools from `from_debian_base(install_flyte=False).with_local_v2()`)
# holds, in the order its Dockerfile makes it: the non-root `flyte` user, the
# working directory /home/flyte, the virtualenv /opt/venv first on PATH with
# flyte installed, PYTHONPATH=/root, and `USER flyte` at the end. Every env whose
# spec starts from that image renders these same lines, so they are one set of
# cached layers on the engine: flyte is installed once for all of them.
# The installer's download cache is a BuildKit cache mount (stripped for the
# classic builder, see `without_cache_mounts`), so a cold build downloads nothing twice.
FLYTE_USER_CMD = (
    "if ! id -u flyte >/dev/null 2>&1; then useradd --create-home --shell /bin/bash flyte; fi && "
    "mkdir -p /home/flyte && chown -R flyte:flyte /home/flyte && chown -R flyte:flyte /root"
)
FLYTE_USER_MARK = "useradd --create-home --shell /bin/bash flyte"
PIP_CACHE_MOUNT = "--mount=type=cache,target=/root/.cache/pip,id=flyte-build-pip,sharing=locked"
FLYTE_USER_FOOTER = ("USER flyte", "WORKDIR /home/flyte")


def runtime_recipe(flyte_version: str | None, debian_recipe: str = "full") -> list[str]:
    """The lines after FROM that turn a plain debian Python into flyte's runtime image."""
    lines = [
        run_line(FLYTE_USER_CMD),
        "WORKDIR /home/flyte",
        'ENV VIRTUAL_ENV="/opt/venv" PATH="/opt/venv/bin:$PATH" PYTHONPATH="/root" UV_LINK_MODE="copy"',
    ]
    if debian_recipe == "full":
        lines.append(run_line(
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            + " ".join(shell_quote(p) for p in RECIPE_APT) + " && rm -rf /var/lib/apt/lists/*"
        ))
    spec = f"flyte=={flyte_version.lstrip('v')}" if flyte_version else "flyte"
    lines.append(
        f"RUN {PIP_CACHE_MOUNT} python3 -m venv /opt/venv && "
        f"/opt/venv/bin/python -m pip install --disable-pip-version-check {shell_quote(spec)}"
    )
    lines.extend(FLYTE_USER_FOOTER)
    return lines


def without_cache_mounts(dockerfile: str) -> str:
    """The Dockerfile for the classic builder, which knows no `RUN --mount=type=cache`:
    the mounts only keep downloads between builds, so the image is the same without them."""
    return re.sub(r"(?m)^(RUN\s+)((?:--mount=type=cache\S*\s+)+)", r"\1", dockerfile)


def creates_flyte_user(layers: list[dict]) -> bool:
    """Whether a Commands layer creates the `flyte` user (flyte's debian recipe, install_flyte=False)."""
    return any(layer.get("type") == "Commands" and any(FLYTE_USER_MARK in c for c in layer.get("commands") or ())
               for layer in layers)
