"""The `[tool.hatch.build.targets.flyte]` table, read by both the CLI and hatch.

One schema names every key, its type and its default; an unknown key or a bad
value is a `UserError` naming the exact TOML field (and the allowed values),
as hatchling's own config classes do. Command-line flags override the table.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import UserError

TABLE = "tool.hatch.build.targets.flyte"
COPY_STYLES = ("loaded_modules", "all", "none")

# Options every hatch builder target accepts; hatch reads them, we leave them be.
HATCH_TARGET_KEYS = frozenset(
    {
        "directory", "dependencies", "require-runtime-dependencies", "require-runtime-features",
        "versions", "hooks", "include", "exclude", "only-include", "artifacts", "force-include",
        "only-packages", "reproducible", "sources", "packages", "skip-excluded-dirs", "ignore-vcs",
        "dev-mode-dirs", "dev-mode-exact", "strict-naming", "macos-max-compat", "bypass-selection",
    }
)


def _str(field_: str, v: Any) -> str:
    if not isinstance(v, str):
        raise UserError(f"Field {field_} must be a string")
    return v


def _bool(field_: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise UserError(f"Field {field_} must be a boolean")
    return v


def _int(field_: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise UserError(f"Field {field_} must be a positive integer")
    return v


def _seconds(field_: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise UserError(f"Field {field_} must be a positive number of seconds")
    return float(v)


def _strs(field_: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise UserError(f"Field {field_} must be an array of strings")
    return tuple(v)


def _str_table(field_: str, v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise UserError(f"Field {field_} must be a table of strings")
    return dict(sorted(v.items()))


def _copy_style(field_: str, v: Any) -> str:
    if v not in COPY_STYLES:
        raise UserError(f"Field {field_} must be one of: {', '.join(COPY_STYLES)}")
    return v


def _choice(*allowed: str) -> Callable[[str, Any], str]:
    def check(field_: str, v: Any) -> str:
        if v not in allowed:
            raise UserError(f"Field {field_} must be one of: {', '.join(allowed)}")
        return v

    return check


@dataclass(frozen=True)
class EnvOverride:
    copy_style: str | None = None
    include: tuple[str, ...] = ()


ENV_KEYS: dict[str, tuple[str, Callable]] = {
    "copy-style": ("copy_style", _copy_style),
    "include": ("include", _strs),
}


def _envs(field_: str, v: Any) -> dict[str, EnvOverride]:
    if not isinstance(v, dict):
        raise UserError(f"Field {field_} must be a table of environment names")
    out = {}
    for env, table in sorted(v.items()):
        if not isinstance(table, dict):
            raise UserError(f"Field {field_}.{env} must be a table")
        kwargs = {}
        for key, val in table.items():
            if key not in ENV_KEYS:
                raise UserError(f"Unknown field {field_}.{env}.{key}; valid fields: {', '.join(sorted(ENV_KEYS))}")
            attr, check = ENV_KEYS[key]
            kwargs[attr] = check(f"{field_}.{env}.{key}", val)
        out[env] = EnvOverride(**kwargs)
    return out


def _table(field_: str, v: Any) -> dict:
    if not isinstance(v, dict):
        raise UserError(f"Field {field_} must be a table")
    return v


DEPLOY_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "timeout": lambda f, v: v,  # checked where it is used (deployer.backend_target)
    "endpoint": _str,
    "insecure": _bool,
    "org": _str,
    "auth-type": _str,
    "ca-cert": _str,
}


def _deploy(field_: str, v: Any) -> dict:
    """The deploy table; endpoint, insecure, org, auth-type and ca-cert override
    flyte's own config file (see flyte_config.LAYERS)."""
    if not isinstance(v, dict):
        raise UserError(f"Field {field_} must be a table")
    for key, val in v.items():
        if key not in DEPLOY_KEYS:
            raise UserError(f"Unknown field {field_}.{key}; valid fields: {', '.join(sorted(DEPLOY_KEYS))}")
        DEPLOY_KEYS[key](f"{field_}.{key}", val)
    return v


def _object_store(field_: str, v: Any):
    from .stores.remote import parse_options  # imports no cloud library

    return parse_options(field_, v)


@dataclass(frozen=True)
class Config:
    """Settings for one repository. `root` is absolute; the rest are as written."""

    root: Path
    pyproject: Path | None = None
    paths: tuple[str, ...] = ()
    copy_style: str = "loaded_modules"
    ignore_load_errors: bool = False
    images: dict[str, str] = field(default_factory=dict)
    registry: str | None = None
    cache: str | None = None
    cache_required: bool = False
    cache_read_only: bool | None = None  # None: read-only unless in CI or holding a signing key
    cache_verify_keys: tuple[str, ...] = ()
    cache_signing_key_file: str | None = None
    discovery_timeout: float | None = None  # seconds; None: discovery.DEFAULT_TIMEOUT
    storage: str | None = None
    object_store: Any = None  # stores.remote.StoreOptions: endpoints, credentials, timeout
    project: str | None = None
    domain: str | None = None
    allow_secrets: tuple[str, ...] = ()
    source_roots: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    jobs: int = max(1, min(8, os.cpu_count() or 1))
    strict: bool = False
    envs: dict[str, EnvOverride] = field(default_factory=dict)
    docker: dict = field(default_factory=dict)
    pex: dict = field(default_factory=dict)
    deploy: dict = field(default_factory=dict)
    directory: str = "dist/flyte"
    flyte_config: str | None = None  # flyte's config.yaml given with --config (else flyte's own lookup)

    def copy_style_for(self, env: str) -> str:
        o = self.envs.get(env)
        return o.copy_style if o and o.copy_style else self.copy_style

    def include_for(self, env: str) -> tuple[str, ...]:
        o = self.envs.get(env)
        return o.include if o else ()

    def with_overrides(self, **kwargs) -> "Config":
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


KEYS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "root-dir": ("root_dir", _str),
    "paths": ("paths", _strs),
    "copy-style": ("copy_style", _copy_style),
    "ignore-load-errors": ("ignore_load_errors", _bool),
    "images": ("images", _str_table),
    "registry": ("registry", _str),
    "cache": ("cache", _str),
    "cache-required": ("cache_required", _bool),
    "cache-read-only": ("cache_read_only", _bool),
    "cache-verify-keys": ("cache_verify_keys", _strs),
    "cache-signing-key-file": ("cache_signing_key_file", _str),
    "discovery-timeout": ("discovery_timeout", _seconds),
    "storage": ("storage", _str),
    "object-store": ("object_store", _object_store),
    "project": ("project", _str),
    "domain": ("domain", _str),
    "allow-secrets": ("allow_secrets", _strs),
    "source-roots": ("source_roots", _strs),
    "rules": ("rules", _strs),
    "jobs": ("jobs", _int),
    "strict": ("strict", _bool),
    "envs": ("envs", _envs),
    "docker": ("docker", _table),
    "pex": ("pex", _table),
    "deploy": ("deploy", _deploy),
}


def find_pyproject(start: Path) -> Path | None:
    start = start.resolve()
    for d in (start, *start.parents):
        p = d / "pyproject.toml"
        if p.is_file():
            return p
    return None


def read_table(pyproject: Path) -> dict:
    try:
        with open(pyproject, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{pyproject}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{pyproject}: not valid UTF-8 (byte {exc.start}); TOML files are UTF-8") from None
    except OSError as exc:
        raise UserError(f"{pyproject}: cannot read: {exc.strerror}") from None
    table: Any = data
    for part in TABLE.split("."):
        table = table.get(part, {}) if isinstance(table, dict) else {}
    if not isinstance(table, dict):
        raise UserError(f"{pyproject}: {TABLE} must be a table")
    return table


def from_table(table: dict, base_dir: Path, pyproject: Path | None = None) -> Config:
    """Validate a raw table (as hatch hands it to a builder) into a Config."""
    kwargs: dict[str, Any] = {}
    root_dir = None
    where = f" in {pyproject}" if pyproject else ""
    for key, value in table.items():
        if key in HATCH_TARGET_KEYS:
            if key == "directory":
                kwargs["directory"] = _str(f"{TABLE}.directory", value)
            continue
        if key not in KEYS:
            valid = ", ".join(sorted(KEYS))
            raise UserError(f"Unknown field {TABLE}.{key}{where}; valid fields: {valid}")
        attr, check = KEYS[key]
        checked = check(f"{TABLE}.{key}", value)
        if attr == "root_dir":
            root_dir = checked
        else:
            kwargs[attr] = checked
    root = (base_dir / root_dir).resolve() if root_dir else base_dir.resolve()
    if not root.is_dir():
        raise UserError(f"Field {TABLE}.root-dir{where}: {root} is not a directory")
    return Config(root=root, pyproject=pyproject, **kwargs)


def src_layout(root: Path) -> bool:
    """A Python project with a src layout (pyproject.toml beside a `src/`
    directory that is not itself a package and holds one): its modules are
    imported as `pkg.mod`, not `src.pkg.mod`, as `flyte deploy --root-dir src`
    would name them."""
    src = root / "src"
    if not (root / "pyproject.toml").is_file() or not src.is_dir() or (src / "__init__.py").exists():
        return False
    try:
        return any((d / "__init__.py").is_file() for d in src.iterdir() if d.is_dir())
    except OSError:
        return False


def load(root_dir: str | Path | None = None, cwd: Path | None = None) -> Config:
    """The config for a run: the table of the nearest pyproject.toml (from
    `root_dir` if given, else the current directory), rooted at `root_dir`,
    else the table's root-dir, else the directory holding pyproject.toml,
    else the current directory."""
    cwd = Path(cwd or os.getcwd())
    start = Path(root_dir).resolve() if root_dir else cwd
    if root_dir and not start.is_dir():
        raise UserError(f"--root-dir {root_dir}: not a directory")
    pyproject = find_pyproject(start)
    if pyproject is None:
        return Config(root=start.resolve())
    cfg = from_table(read_table(pyproject), pyproject.parent, pyproject)
    if root_dir:
        cfg = replace(cfg, root=start.resolve())
    if not cfg.source_roots and src_layout(cfg.root):
        # no configuration needed for a src layout: `src` is its source root
        cfg = replace(cfg, source_roots=("src",))
    return cfg


def field_names() -> list[str]:
    return [f.name for f in fields(Config)]
