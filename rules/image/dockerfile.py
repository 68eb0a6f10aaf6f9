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
it, after its `.dockerignore` (Docker's own matching rules, below).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flyte_build.errors import UserError
from flyte_build.files import drop_secrets, secret_reason
from flyte_build.hashing import key_of

UV_VERSION = "0.5.11"  # pinned so a uv_project layer renders the same everywhere
POETRY_VERSION = "2.1.4"  # pinned likewise; installed in its own venv, not the task's
POETRY_HOME = "/opt/flyte-build/poetry"
PEX_NAME = "deps/requirements.pex"
TAG_LENGTH = 32

# flyte's from_debian_base() starts from these; `docker.base-images.debian` replaces them
_DEBIAN_BASE = re.compile(r"^(?:docker\.io/(?:library/)?)?python:(\d+)\.(\d+)-slim-bookworm$")
_FLYTE_BASE = re.compile(r"^ghcr\.io/flyteorg/flyte:py(\d+)\.(\d+)(?:-v?(.+))?$")
# the toolchain layer of flyte's debian recipe; `debian-recipe = "light"` leaves it to the base
_RECIPE_APT = ("build-essential", "ca-certificates")


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


# -- .dockerignore (Docker's rules: Go filepath.Match on the whole path, `**`,
# `!` exceptions, a pattern matching a directory excludes what is under it) ----
def _pattern_regex(pat: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**", i):
            i += 2
            if pat.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pat.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                cls = pat[i + 1 : j]
                if cls.startswith("^") or cls.startswith("!"):
                    cls = "^" + cls[1:]
                out.append(f"[{cls}]")
                i = j
        elif c == "\\" and i + 1 < len(pat):
            i += 1
            out.append(re.escape(pat[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def parse_dockerignore(text: str) -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:].strip()
        line = posixpath.normpath(line.lstrip("/")) if line.lstrip("/") else "."
        rules.append((negate, _pattern_regex(line)))
    return rules


def dockerignored(rules: list[tuple[bool, re.Pattern]], rel: str) -> bool:
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def dockerfile_context(directory: Path) -> dict[str, str]:
    """The files of a `from_dockerfile` build context, after its `.dockerignore`."""
    ignore = directory / ".dockerignore"
    rules = parse_dockerignore(ignore.read_text(encoding="utf-8", errors="replace")) if ignore.is_file() else []
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        rel_dir = Path(os.path.relpath(dirpath, directory)).as_posix()
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not dockerignored(rules, rel):
                out[rel] = path
    return dict(sorted(out.items()))


# -- rendering -----------------------------------------------------------------
def _quote(v: str) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sh(v: str) -> str:
    return "'" + str(v).replace("'", "'\"'\"'") + "'"


def _run(cmd: str, mounts: tuple[str, ...] = ()) -> str:
    """A RUN line; `mounts` are (BuildKit mount flags, shell prefix) from `_Secrets.mounts`."""
    flags, prefix = mounts if mounts else ("", "")
    lines = cmd.splitlines()
    if prefix:
        lines[0] = prefix + lines[0]
    return "RUN " + (flags + " " if flags else "") + " \\\n    ".join(lines)


# create the venv an earlier ENV VIRTUAL_ENV names, the first time something installs
_VENV_GUARD = '{ [ -z "$VIRTUAL_ENV" ] || [ -x "$VIRTUAL_ENV/bin/python" ] || python3 -m venv "$VIRTUAL_ENV"; }'


class _Secrets:
    """The secret mounts of an image's layers, as flyte's builder gives them.

    flyte turns `secret_mounts=[Secret(key=..., as_env_var=... | mount=...)]` (or a bare key)
    into `RUN --mount=type=secret,id=ID,env=VAR|target=PATH` and `docker buildx build
    --secret id=ID,env=GROUP_KEY` (else `src=/etc/secrets/group_key`). The Dockerfile
    frontend built into the engine here has no `env=` for secret mounts, so an env-var
    secret is mounted as a file and exported for that one RUN: visible to the step,
    absent from the image, its history and its environment afterwards."""

    def __init__(self) -> None:
        self.needed: dict[str, tuple[str, str]] = {}  # id -> (host env var, host file)

    def mounts(self, layer: dict, where: str) -> tuple[str, str]:
        flags, exports = [], []
        for raw in layer.get("secret_mounts") or ():
            if isinstance(raw, str):
                key, group, mount, env = raw, None, None, None
            elif isinstance(raw, dict) and isinstance(raw.get("key"), str):
                key, group, mount, env = raw["key"], raw.get("group"), raw.get("mount"), raw.get("as_env_var")
            else:
                raise UserError(f"{where}: secret mount {raw!r} is neither a key nor a flyte.Secret")
            if not mount and not env:
                env = (f"{group}_{key}" if group else key).replace("-", "_").upper()
            if env and not re.fullmatch(r"[A-Z_][A-Z0-9_]*", env):
                raise UserError(f"{where}: secret {key!r}: {env!r} is not a valid environment variable name")
            # flyte's id for the secret, hash(secret): the first 64 bits of its stable hash, which
            # CPython's hash() keeps when they fit a signed 64-bit word and else folds modulo
            # 2**61 - 1 (written out, so the id is the same on any machine)
            stable = hashlib.sha256("|".join([key, group or "", str(mount or ""), env or ""]).encode()).hexdigest()
            n = int(stable[:16], 16)
            ident = str(n if n < 2**63 else n % (2**61 - 1))
            parts = [k for k in (group, key) if k]
            self.needed[ident] = ("_".join(k.upper() for k in parts), "/etc/secrets/" + "_".join(parts))
            if mount:
                flags.append(f"--mount=type=secret,id={ident},target={mount}")
            else:
                flags.append(f"--mount=type=secret,id={ident},target=/run/secrets/{ident}")
                exports.append(f'{env}="$(cat /run/secrets/{ident})" && export {env} && ')
        return " ".join(flags), "".join(exports)

    def records(self) -> tuple[tuple[str, str, str], ...]:
        return tuple((i, env, path) for i, (env, path) in sorted(self.needed.items()))


def _pip_flags(layer: dict) -> list[str]:
    flags = ["--no-cache-dir"]
    if layer.get("index_url"):
        flags.append(f"--index-url {_sh(layer['index_url'])}")
    for url in layer.get("extra_index_urls") or ():
        flags.append(f"--extra-index-url {_sh(url)}")
    if layer.get("pre"):
        flags.append("--pre")
    if layer.get("extra_args"):
        flags.append(str(layer["extra_args"]))
    return flags


def parse_script_metadata(text: str) -> dict | None:
    """A script's PEP 723 `# /// script` block as TOML (flyte's `from_uv_script` reads it the same way)."""
    import tomllib

    m = re.search(r"(?ms)^# /// script\s*$(.*?)^# ///\s*$", text)
    if not m:
        return None
    body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in m.group(1).strip("\n").splitlines())
    return tomllib.loads(body)


def _base_for(spec: dict, opts: Options, where: str) -> tuple[str | None, list[str], bool]:
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
        return opts.base_map[base], [], bool(_DEBIAN_BASE.match(base))
    m = _DEBIAN_BASE.match(base)
    if m and "debian" in opts.base_images:
        return opts.base_images["debian"], [], True
    m = _FLYTE_BASE.match(base)
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
_FLYTE_USER_MARK = "useradd --create-home --shell /bin/bash flyte"
PIP_CACHE_MOUNT = "--mount=type=cache,target=/root/.cache/pip,id=flyte-build-pip,sharing=locked"
FLYTE_USER_FOOTER = ("USER flyte", "WORKDIR /home/flyte")


def runtime_recipe(flyte_version: str | None, debian_recipe: str = "full") -> list[str]:
    """The lines after FROM that turn a plain debian Python into flyte's runtime image."""
    lines = [
        _run(FLYTE_USER_CMD),
        "WORKDIR /home/flyte",
        'ENV VIRTUAL_ENV="/opt/venv" PATH="/opt/venv/bin:$PATH" PYTHONPATH="/root" UV_LINK_MODE="copy"',
    ]
    if debian_recipe == "full":
        lines.append(_run(
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            + " ".join(_sh(p) for p in _RECIPE_APT) + " && rm -rf /var/lib/apt/lists/*"
        ))
    spec = f"flyte=={flyte_version.lstrip('v')}" if flyte_version else "flyte"
    lines.append(
        f"RUN {PIP_CACHE_MOUNT} python3 -m venv /opt/venv && "
        f"/opt/venv/bin/python -m pip install --disable-pip-version-check {_sh(spec)}"
    )
    lines.extend(FLYTE_USER_FOOTER)
    return lines


def without_cache_mounts(dockerfile: str) -> str:
    """The Dockerfile for the classic builder, which knows no `RUN --mount=type=cache`:
    the mounts only keep downloads between builds, so the image is the same without them."""
    return re.sub(r"(?m)^(RUN\s+)((?:--mount=type=cache\S*\s+)+)", r"\1", dockerfile)


def _ignore_rules(spec: dict, root: Path, where: str) -> tuple[list, bool]:
    """The .dockerignore that filters the folders layers copy, as flyte reads it: the last
    `with_dockerignore` layer's file, else the root's `.dockerignore`. The bool says whether
    Docker itself applies it to the context too (flyte ships a `with_dockerignore` file named
    `.dockerignore` at the context's root, whose paths mirror the root's)."""
    chosen = None
    for i, layer in enumerate(spec.get("layers") or ()):
        if layer.get("type") == "DockerIgnore" and str(layer.get("path") or "").strip():
            chosen = (i, str(layer["path"]))
    if chosen is None:
        default = root / ".dockerignore"
        return (parse_dockerignore(default.read_text(encoding="utf-8", errors="replace")) if default.is_file() else []), False
    i, rel = chosen
    path = Path(rel) if os.path.isabs(rel) else root / rel
    if not path.is_file():
        raise UserError(f"{where}: layer {i} (DockerIgnore): with_dockerignore file {rel!r} does not exist")
    return parse_dockerignore(path.read_text(encoding="utf-8", errors="replace")), path.name == ".dockerignore"


class _Build:
    """One render in progress: the Dockerfile lines so far, the build context
    (context name -> absolute path), the warnings and the secrets its layers mount."""

    def __init__(self, spec: dict, root: Path, opts: Options, where: str, list_folder: Callable[[str], dict[str, str]],
                 recipe: bool) -> None:
        self.root, self.opts, self.where, self.list_folder = root, opts, where, list_folder
        self.recipe = recipe  # flyte's debian recipe is among the layers (see _base_for)
        self.out: list[str] = []
        self.context: dict[str, str] = {}
        self.warnings: list[str] = []
        self.secrets = _Secrets()
        self.pex_done = False  # the one PEX layer stands for every pip layer
        self.ignore_rules, self.ignore_at_root = _ignore_rules(spec, root, where)

    def root_file(self, rel: str, what: str, outside_ok: bool = False) -> str:
        """A file a layer copies, put into the context; returns its context name."""
        opts, root = self.opts, self.root
        if outside_ok and rel.startswith("/") and opts.project_dir and os.path.isfile(rel) \
                and os.path.realpath(rel).startswith(opts.project_dir.rstrip("/") + "/"):
            # the root is a src/ folder of the project: its pyproject.toml and
            # uv.lock sit above it, and go into the image's build context only
            name = "project/" + os.path.relpath(os.path.realpath(rel), opts.project_dir)
            self.context[name] = os.path.realpath(rel)
            return name
        if rel.startswith("/") or rel.startswith("../") or rel == "..":
            raise UserError(f"{self.where}: {what} {rel!r} lies outside the root {root}")
        path = root / rel
        if not path.is_file():
            raise UserError(f"{self.where}: {what} {rel!r} does not exist")
        # named by a layer, a secret still stays out of the context (stored in the caches, sent to the engine)
        why = secret_reason(rel, str(path), root, opts.allow_secrets)
        if why is not None:
            raise UserError(f"{self.where}: {what} {why}")
        self.context[f"src/{rel}"] = str(path)
        return f"src/{rel}"

    def folder(self, rel: str, keep: tuple[str, ...] = ()) -> dict[str, str]:
        """The files under a root-relative folder a layer copies: the repository's ignores,
        then the .dockerignore matched relative to that folder (flyte's matcher) and, when
        Docker applies it to the context, relative to the root; `keep` always stays."""
        out = {}
        prefix = "" if rel in ("", ".") else rel.rstrip("/") + "/"
        for n, p in self.list_folder(rel).items():
            if n not in keep and self.ignore_rules and self._dockerignored(n, prefix):
                continue
            out[n] = p
        for n in keep:
            if n not in out and (self.root / n).is_file():
                out[n] = str(self.root / n)
        return out

    def _dockerignored(self, name: str, prefix: str) -> bool:
        inner = name[len(prefix):] if name.startswith(prefix) else name
        return dockerignored(self.ignore_rules, inner) or (self.ignore_at_root and dockerignored(self.ignore_rules, name))

    def copy_folder(self, rel: str, keep: tuple[str, ...] = ()) -> dict[str, str]:
        """`folder(rel, keep)`, each file put into the context under src/."""
        files = self.folder(rel, keep)
        for n, p in files.items():
            self.context[f"src/{n}"] = p
        return files


# -- one small function per layer kind (as flyte's builder has one handler per
# layer type); each appends its lines to the build and its files to the context.
# Arguments: the build, the layer (plain data), its index, its name in errors, and
# its secret mounts (`_Secrets.mounts`).
def _docker_lines(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    b.out.extend(layer.get("lines") or ())


def _commands(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    b.out.extend(_run(c, mounts) for c in layer.get("commands") or ())


def _workdir(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    b.out.append(f"WORKDIR {layer['workdir']}")


def _env(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    pairs = layer.get("env_vars") or ()
    if pairs:
        b.out.append("ENV " + " ".join(f"{k}={_quote(v)}" for k, v in pairs))


def _apt_packages(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    pkgs = tuple(layer.get("packages") or ())
    if b.recipe and b.opts.debian_recipe == "light" and pkgs == _RECIPE_APT and not layer.get("secret_mounts"):
        return  # the configured debian base stands in for flyte's toolchain layer
    b.out.append(_run(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        + " ".join(_sh(p) for p in pkgs) + " && rm -rf /var/lib/apt/lists/*",
        mounts,
    ))


def _pex_requirements(b: _Build) -> None:
    """The PEX holds every pip requirement of the image: one layer, identical
    whenever the requirements are."""
    if b.pex_done:
        return
    b.context[PEX_NAME] = ""  # filled in by the caller (a built artifact)
    b.out.append(f"COPY {PEX_NAME} /tmp/requirements.pex")
    # into the venv as it is (`pex venv --force` would wipe it, and the flyte
    # runtime with it): the PEX's wheels, exactly its resolve, no index
    b.out.append('ENV VIRTUAL_ENV="${VIRTUAL_ENV:-/opt/venv}" PATH="${VIRTUAL_ENV:-/opt/venv}/bin:$PATH"')
    b.out.append(_run(
        f"{_VENV_GUARD} && PEX_TOOLS=1 python3 /tmp/requirements.pex repository extract -f /tmp/pex-wheels "
        "&& python3 -m pip install --no-cache-dir --no-index --no-deps /tmp/pex-wheels/*.whl "
        "&& rm -rf /tmp/requirements.pex /tmp/pex-wheels"
    ))
    b.pex_done = True


def _pip(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    """PipPackages and Requirements (flyte's PipAndRequirementsHandler)."""
    if b.opts.use_pex:
        _pex_requirements(b)
        return
    flags = " ".join(_pip_flags(layer))
    if layer.get("type") == "Requirements":
        name = b.root_file(layer["file"], "requirements file")
        b.out.append(f"COPY {name} /tmp/flyte-build/{name}")
        b.out.append(_run(f"{_VENV_GUARD} && python3 -m pip install {flags} -r /tmp/flyte-build/{name}", mounts))
    else:
        pkgs = " ".join(_sh(p) for p in layer.get("packages") or ())
        b.out.append(_run(f"{_VENV_GUARD} && python3 -m pip install {flags} {pkgs}", mounts))


def _uv_project(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    flags = " ".join(_pip_flags(layer))
    install = layer.get("project_install_mode") == "install_project"
    pyproject = b.root_file(layer["pyproject"], "pyproject", outside_ok=not install)
    proj_dir = posixpath.dirname(pyproject)
    lock = b.root_file(layer["uvlock"], "uv.lock", outside_ok=not install) if layer.get("uvlock") else None
    if install:
        keep = tuple(x for x in (layer["pyproject"], layer.get("uvlock")) if x)
        b.copy_folder(posixpath.dirname(layer["pyproject"]), keep)
        b.out.append(f"COPY {proj_dir}/ /tmp/flyte-build/{proj_dir}/")
    else:
        b.out.append(f"COPY {pyproject} /tmp/flyte-build/{pyproject}")
        if lock:
            b.out.append(f"COPY {lock} /tmp/flyte-build/{lock}")
    export = "--frozen" if lock else ""
    cmd = (
        f"{_VENV_GUARD} && python3 -m pip install --no-cache-dir uv=={UV_VERSION} "
        f"&& cd /tmp/flyte-build/{proj_dir} && uv export {export} --no-hashes --no-emit-project -o /tmp/flyte-build/uv-req.txt "
        f"&& python3 -m pip install {flags} -r /tmp/flyte-build/uv-req.txt"
    )
    if install:
        cmd += f" && python3 -m pip install --no-cache-dir --no-deps /tmp/flyte-build/{proj_dir}"
    b.out.append(_run(cmd, mounts))


def _poetry_project(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    # flyte: `poetry install` into the active venv from pyproject + poetry.lock; dependencies
    # only (`--no-root`) by default, the whole project (installed, editable, from
    # /root/.flyte/<dir>) with install_project. Poetry itself lives in its own venv here, so
    # its ~40 packages cannot clash with the task's (flyte installs it into the task venv).
    pyproject = b.root_file(layer["pyproject"], "pyproject")
    lock_rel = layer.get("poetry_lock") or posixpath.join(posixpath.dirname(layer["pyproject"]), "poetry.lock")
    lock = b.root_file(lock_rel, "poetry.lock")
    proj_dir = posixpath.dirname(pyproject)
    args = str(layer.get("extra_args") or "")
    # the tool first, in a step of its own: the same in every image on this base, so
    # BuildKit builds it once, and an edit of the project or its lock does not redo it
    b.out.append(_run(f"[ -x {POETRY_HOME}/bin/poetry ] || {{ python3 -m venv {POETRY_HOME} "
                      f"&& {POETRY_HOME}/bin/pip install --no-cache-dir poetry=={POETRY_VERSION}; }}"))
    if layer.get("project_install_mode") == "install_project":
        b.copy_folder(posixpath.dirname(layer["pyproject"]), (layer["pyproject"],))
        dest = f"/root/.flyte/{proj_dir}"
        b.out.append(f"COPY {proj_dir}/ {dest}/")
    else:
        if "--no-root" not in args:
            args = (args + " --no-root").strip()
        dest = f"/tmp/flyte-build/{proj_dir}"
        b.out.append(f"COPY {pyproject} {dest}/pyproject.toml")
    b.out.append(f"COPY {lock} {dest}/poetry.lock")
    # poetry installs into the active venv (flyte's images always have one): name it, so
    # poetry never makes a venv of its own that the task would not see
    b.out.append('ENV VIRTUAL_ENV="${VIRTUAL_ENV:-/opt/venv}" PATH="${VIRTUAL_ENV:-/opt/venv}/bin:$PATH"')
    cmd = (
        f"{_VENV_GUARD} && cd {dest} && POETRY_CACHE_DIR=/tmp/poetry-cache "
        f"{POETRY_HOME}/bin/poetry install --no-interaction {args}".rstrip()
        + " && rm -rf /tmp/poetry-cache"
    )
    b.out.append(_run(cmd, mounts))


def _script_dependencies(root: Path, rel: str, lw: str) -> list[str]:
    """The `dependencies` of a uv script's PEP 723 block, checked."""
    if rel.startswith("/") or rel.startswith("../") or not (root / rel).is_file():
        raise UserError(f"{lw}: uv script {rel!r} is not a file under the root")
    try:
        meta = parse_script_metadata((root / rel).read_text(encoding="utf-8"))
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise UserError(f"{lw}: the `# /// script` block of {rel} is not valid TOML: {exc}") from None
    if meta is None:
        raise UserError(f"{lw}: {rel} has no `# /// script` metadata block")
    deps = meta.get("dependencies") or []
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise UserError(f"{lw}: `dependencies` in the script block of {rel} must be a list of strings")
    return deps


def _uv_script(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    # flyte: the script's PEP 723 dependencies are pip-installed with the layer's pip
    # options; each `file://` dependency is a uv project installed whole (git first)
    root = b.root
    deps = _script_dependencies(root, layer["script"], lw)
    plain = [d for d in deps if "file://" not in d]
    projects = [d.split("file://")[-1] for d in deps if "file://" in d]
    if plain:
        b.out.append(_run(f"{_VENV_GUARD} && python3 -m pip install {' '.join(_pip_flags(layer))} {' '.join(_sh(d) for d in plain)}", mounts))
    if projects:
        b.out.append(_run("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*"))
    for proj in projects:
        prel = os.path.relpath(proj, root) if os.path.isabs(proj) else posixpath.normpath(proj)
        prel = Path(prel).as_posix()
        if prel.startswith("../") or prel == "..":
            raise UserError(f"{lw}: the script's dependency file://{proj} lies outside the root {root}")
        lockp = posixpath.join(prel, "uv.lock")
        _uv_project(b, {**layer, "pyproject": posixpath.join(prel, "pyproject.toml"),
                        "uvlock": lockp if (root / lockp).is_file() else None,
                        "project_install_mode": "install_project"}, i, lw, mounts)


def _python_wheels(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    # flyte (`with_local_v2` and friends): install the package from the wheel folder with
    # its dependencies from the index, then force the exact local wheel over whatever that
    # resolved (--no-deps --no-index, reinstalled)
    src = str(layer.get("wheel_dir") or "")
    package = str(layer.get("package_name") or "")
    path = Path(src) if os.path.isabs(src) else b.root / src
    found = sorted(path.glob("*.whl")) if path.is_dir() else []
    stem = re.sub(r"[-_.]+", "_", package).lower()
    if not any(re.sub(r"[-_.]+", "_", w.name.split("-")[0]).lower() == stem for w in found):
        hint = " (with_local_v2 reads flyte's own dist/ folder: build the flyte wheel there first)" if stem in ("flyte", "flyteidl2") else ""
        raise UserError(f"{lw}: the wheel folder {src!r} holds no wheel of {package!r}{hint}")
    for w in found:
        b.context[f"wheels/{i}/{w.name}"] = str(w)
    d = f"/tmp/flyte-build/wheels/{i}"
    flags = " ".join(_pip_flags(layer))
    b.out.append(f"COPY wheels/{i}/ {d}/")
    b.out.append(_run(
        f"{_VENV_GUARD} && python3 -m pip install {flags} --find-links {d} {_sh(package)} "
        f"&& python3 -m pip install {flags} --find-links {d} --no-deps --no-index --force-reinstall {_sh(package)} "
        f"&& rm -rf {d}",
        mounts,
    ))


def _dockerignore(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    pass  # read up front (_ignore_rules): it filters what the other layers copy


def _copy_config(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    """with_source_file (path_type 0) and with_source_folder."""
    src, dst = layer["src"], str(layer["dst"])
    if src.startswith("/") or src.startswith("../"):
        raise UserError(f"{lw}: source {src!r} lies outside the root {b.root}")
    if layer.get("path_type") == 0:
        name = b.root_file(src, "source file")
        b.out.append(f"COPY {name} {dst.rstrip('/')}/")
        return
    if not (b.root / src).is_dir():
        raise UserError(f"{lw}: source folder {src!r} does not exist")
    if not b.copy_folder(src):
        b.warnings.append(f"{lw}: source folder {src!r} holds no file after the ignores")
    # COPY of a directory copies its contents; flyte already put the folder's
    # own name into dst when copy_contents_only is false
    b.out.append(f"COPY src/{src}/ {dst.rstrip('/') or '/'}/")


def _code_bundle(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    raise UserError(f"{lw}: with_code_bundle is not supported; use copy-style = \"none\" to bake the code in")


def _pixi(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    raise UserError(
        f"{lw}: pixi layers are not supported: the pixi tool is not on PyPI, npm or Debian and conda "
        "channels are out of reach where flyte-build is tested; use with_uv_project, with_poetry_project "
        "or with_pip_packages, or build this image with flyte"
    )


def _unsupported(b: _Build, layer: dict, i: int, lw: str, mounts) -> None:
    raise UserError(
        f"{lw}: unsupported image layer {layer.get('type')!r}; supported: from_debian_base, from_base, from_ref_name, "
        "from_dockerfile, from_uv_script, with_pip_packages, with_requirements, with_apt_packages, "
        "with_uv_project, with_poetry_project, with_source_folder, with_source_file, with_dockerignore, "
        "with_env_vars, with_workdir, with_commands, with_local_v2"
    )


# layer type (flyte's class name) -> its render function
LAYER_RENDERERS: dict[str, Callable[..., None]] = {
    "_DockerLines": _docker_lines,
    "Commands": _commands,
    "WorkDir": _workdir,
    "Env": _env,
    "AptPackages": _apt_packages,
    "PipPackages": _pip,
    "Requirements": _pip,
    "UVProject": _uv_project,
    "PoetryProject": _poetry_project,
    "UVScript": _uv_script,
    "PythonWheels": _python_wheels,
    "DockerIgnore": _dockerignore,
    "CopyConfig": _copy_config,
    "CodeBundleLayer": _code_bundle,
    "PixiProject": _pixi,
    "PixiScript": _pixi,
}


def _render_layer(b: _Build, i: int, layer: dict) -> None:
    kind = layer.get("type")
    lw = f"{b.where}: layer {i} ({kind})"
    # a pip layer the PEX stands in for runs no step here, so it needs no secret
    pex_pip = b.opts.use_pex and kind in ("PipPackages", "Requirements")
    mounts = ("", "") if pex_pip else b.secrets.mounts(layer, lw)
    render_one = LAYER_RENDERERS.get(kind, _unsupported) if isinstance(kind, str) else _unsupported
    render_one(b, layer, i, lw, mounts)


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


def _creates_flyte_user(layers: list[dict]) -> bool:
    """Whether a Commands layer creates the `flyte` user (flyte's debian recipe, install_flyte=False)."""
    return any(layer.get("type") == "Commands" and any(_FLYTE_USER_MARK in c for c in layer.get("commands") or ())
               for layer in layers)


def render(spec: dict, root: Path, opts: Options, where: str, list_folder: Callable[[str], dict[str, str]]) -> Rendered:
    """Render `spec` (an EnvSpec.image dict). `where` names the env in errors;
    `list_folder(rel)` returns the files under a root-relative folder (name -> path)."""
    platforms = tuple(spec.get("platform") or ())
    build_args = tuple(sorted(opts.build_args.items()))
    if spec.get("dockerfile"):
        return _render_from_dockerfile(spec, root, opts, where, platforms, build_args)
    base, after_from, recipe = _base_for(spec, opts, where)
    layers = list(spec.get("layers") or ())
    if base is None:
        raise UserError(f"{where}: the image has no base image (use Image.from_debian_base or Image.from_base)")
    if not layers and not opts.bake and not after_from:
        return Rendered(base, None, (), platforms, build_args)
    b = _Build(spec, root, opts, where, list_folder, recipe)
    b.out = [f"FROM {base}", *after_from]
    if (after_from or _FLYTE_BASE.match(spec.get("base_image") or "")) and (layers or opts.bake):
        # flyte's builder starts every image with `USER root` (its runtime image ends
        # as `flyte`), and adds no `USER flyte` back unless the layers create that user
        b.out.append("USER root")
    for i, layer in enumerate(layers):
        _render_layer(b, i, layer)
    if opts.bake:
        b.context.update({f"code/{n}": p for n, p in opts.bake.items()})
        b.out.append(f"COPY code/ {opts.code_dir.rstrip('/')}/")
    if _creates_flyte_user(layers):
        # flyte's builder ends an image whose layers create the `flyte` user by switching to it
        b.out.extend(FLYTE_USER_FOOTER)
    if build_args:
        # declared so a Dockerfile step may use them; their values are in the tag
        b.out[1:1] = [f"ARG {k}" for k, _ in build_args]
    return Rendered(base, "\n".join(b.out) + "\n", tuple(sorted(b.context.items())), platforms, build_args,
                    tuple(b.warnings), b.secrets.records())
