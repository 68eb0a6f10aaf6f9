"""One small function per image layer kind (as flyte's builder has one handler per
layer type), and `Build`, the render in progress they append to: the Dockerfile
lines so far, the build context (context name -> absolute path), the warnings
and the secrets its layers mount.

Context names are fixed by where a file comes from, never by the machine:
`src/<root-relative path>` for files layers copy, `deps/requirements.pex` for a
PEX, `wheels/<layer>/<file>` for the wheels of a `PythonWheels` layer.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from flyte_build.rule_api import UserError, secret_reason

from .dockerignore import dockerignored, parse_dockerignore
from .flyte_base import RECIPE_APT
from .shell_steps import VENV_GUARD, SecretMounts, env_quote, pip_flags, run_line, shell_quote

if TYPE_CHECKING:
    from .dockerfile import Options

UV_VERSION = "0.5.11"  # pinned so a uv_project layer renders the same everywhere
POETRY_VERSION = "2.1.4"  # pinned likewise; installed in its own venv, not the task's
POETRY_HOME = "/opt/flyte-build/poetry"
PEX_NAME = "deps/requirements.pex"


def parse_script_metadata(text: str) -> dict | None:
    """A script's PEP 723 `# /// script` block as TOML (flyte's `from_uv_script` reads it the same way)."""
    import tomllib

    m = re.search(r"(?ms)^# /// script\s*$(.*?)^# ///\s*$", text)
    if not m:
        return None
    body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in m.group(1).strip("\n").splitlines())
    return tomllib.loads(body)


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


class Build:
    """One render in progress: the Dockerfile lines so far, the build context
    (context name -> absolute path), the warnings and the secrets its layers mount."""

    def __init__(self, spec: dict, root: Path, opts: Options, where: str, list_folder: Callable[[str], dict[str, str]],
                 recipe: bool) -> None:
        self.root, self.opts, self.where, self.list_folder = root, opts, where, list_folder
        self.recipe = recipe  # flyte's debian recipe is among the layers (see base_for)
        self.out: list[str] = []
        self.context: dict[str, str] = {}
        self.warnings: list[str] = []
        self.secrets = SecretMounts()
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
# its secret mounts (`SecretMounts.mounts`).
def _docker_lines(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
    b.out.extend(layer.get("lines") or ())


def _commands(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
    b.out.extend(run_line(c, mounts) for c in layer.get("commands") or ())


def _workdir(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
    b.out.append(f"WORKDIR {layer['workdir']}")


def _env(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
    pairs = layer.get("env_vars") or ()
    if pairs:
        b.out.append("ENV " + " ".join(f"{k}={env_quote(v)}" for k, v in pairs))


def _apt_packages(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
    pkgs = tuple(layer.get("packages") or ())
    if b.recipe and b.opts.debian_recipe == "light" and pkgs == RECIPE_APT and not layer.get("secret_mounts"):
        return  # the configured debian base stands in for flyte's toolchain layer
    b.out.append(run_line(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        + " ".join(shell_quote(p) for p in pkgs) + " && rm -rf /var/lib/apt/lists/*",
        mounts,
    ))


def _pex_requirements(b: Build) -> None:
    """The PEX holds every pip requirement of the image: one layer, identical
    whenever the requirements are."""
    if b.pex_done:
        return
    b.context[PEX_NAME] = ""  # filled in by the caller (a built artifact)
    b.out.append(f"COPY {PEX_NAME} /tmp/requirements.pex")
    # into the venv as it is (`pex venv --force` would wipe it, and the flyte
    # runtime with it): the PEX's wheels, exactly its resolve, no index
    b.out.append('ENV VIRTUAL_ENV="${VIRTUAL_ENV:-/opt/venv}" PATH="${VIRTUAL_ENV:-/opt/venv}/bin:$PATH"')
    b.out.append(run_line(
        f"{VENV_GUARD} && PEX_TOOLS=1 python3 /tmp/requirements.pex repository extract -f /tmp/pex-wheels "
        "&& python3 -m pip install --no-cache-dir --no-index --no-deps /tmp/pex-wheels/*.whl "
        "&& rm -rf /tmp/requirements.pex /tmp/pex-wheels"
    ))
    b.pex_done = True


def _pip(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
    """PipPackages and Requirements (flyte's PipAndRequirementsHandler)."""
    if b.opts.use_pex:
        _pex_requirements(b)
        return
    flags = " ".join(pip_flags(layer))
    if layer.get("type") == "Requirements":
        name = b.root_file(layer["file"], "requirements file")
        b.out.append(f"COPY {name} /tmp/flyte-build/{name}")
        b.out.append(run_line(f"{VENV_GUARD} && python3 -m pip install {flags} -r /tmp/flyte-build/{name}", mounts))
    else:
        pkgs = " ".join(shell_quote(p) for p in layer.get("packages") or ())
        b.out.append(run_line(f"{VENV_GUARD} && python3 -m pip install {flags} {pkgs}", mounts))


def _uv_project(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
    flags = " ".join(pip_flags(layer))
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
        f"{VENV_GUARD} && python3 -m pip install --no-cache-dir uv=={UV_VERSION} "
        f"&& cd /tmp/flyte-build/{proj_dir} && uv export {export} --no-hashes --no-emit-project -o /tmp/flyte-build/uv-req.txt "
        f"&& python3 -m pip install {flags} -r /tmp/flyte-build/uv-req.txt"
    )
    if install:
        cmd += f" && python3 -m pip install --no-cache-dir --no-deps /tmp/flyte-build/{proj_dir}"
    b.out.append(run_line(cmd, mounts))


def _poetry_project(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
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
    b.out.append(run_line(f"[ -x {POETRY_HOME}/bin/poetry ] || {{ python3 -m venv {POETRY_HOME} "
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
        f"{VENV_GUARD} && cd {dest} && POETRY_CACHE_DIR=/tmp/poetry-cache "
        f"{POETRY_HOME}/bin/poetry install --no-interaction {args}".rstrip()
        + " && rm -rf /tmp/poetry-cache"
    )
    b.out.append(run_line(cmd, mounts))


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


def _uv_script(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
    # flyte: the script's PEP 723 dependencies are pip-installed with the layer's pip
    # options; each `file://` dependency is a uv project installed whole (git first)
    root = b.root
    deps = _script_dependencies(root, layer["script"], lw)
    plain = [d for d in deps if "file://" not in d]
    projects = [d.split("file://")[-1] for d in deps if "file://" in d]
    if plain:
        b.out.append(run_line(f"{VENV_GUARD} && python3 -m pip install {' '.join(pip_flags(layer))} {' '.join(shell_quote(d) for d in plain)}", mounts))
    if projects:
        b.out.append(run_line("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*"))
    for proj in projects:
        prel = os.path.relpath(proj, root) if os.path.isabs(proj) else posixpath.normpath(proj)
        prel = Path(prel).as_posix()
        if prel.startswith("../") or prel == "..":
            raise UserError(f"{lw}: the script's dependency file://{proj} lies outside the root {root}")
        lockp = posixpath.join(prel, "uv.lock")
        _uv_project(b, {**layer, "pyproject": posixpath.join(prel, "pyproject.toml"),
                        "uvlock": lockp if (root / lockp).is_file() else None,
                        "project_install_mode": "install_project"}, i, lw, mounts)


def _python_wheels(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
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
    flags = " ".join(pip_flags(layer))
    b.out.append(f"COPY wheels/{i}/ {d}/")
    b.out.append(run_line(
        f"{VENV_GUARD} && python3 -m pip install {flags} --find-links {d} {shell_quote(package)} "
        f"&& python3 -m pip install {flags} --find-links {d} --no-deps --no-index --force-reinstall {shell_quote(package)} "
        f"&& rm -rf {d}",
        mounts,
    ))


def _dockerignore(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
    pass  # read up front (_ignore_rules): it filters what the other layers copy


def _copy_config(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
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


def _code_bundle(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
    raise UserError(f"{lw}: with_code_bundle is not supported; use copy-style = \"none\" to bake the code in")


def _pixi(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
    raise UserError(
        f"{lw}: pixi layers are not supported: the pixi tool is not on PyPI, npm or Debian and conda "
        "channels are out of reach where flyte-build is tested; use with_uv_project, with_poetry_project "
        "or with_pip_packages, or build this image with flyte"
    )


def _unsupported(b: Build, layer: dict, i: int, lw: str, mounts) -> None:
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


def render_layer(b: Build, i: int, layer: dict) -> None:
    kind = layer.get("type")
    lw = f"{b.where}: layer {i} ({kind})"
    # a pip layer the PEX stands in for runs no step here, so it needs no secret
    pex_pip = b.opts.use_pex and kind in ("PipPackages", "Requirements")
    mounts = ("", "") if pex_pip else b.secrets.mounts(layer, lw)
    render_one = LAYER_RENDERERS.get(kind, _unsupported) if isinstance(kind, str) else _unsupported
    render_one(b, layer, i, lw, mounts)
