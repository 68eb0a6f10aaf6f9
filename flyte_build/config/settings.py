"""flyte-build's settings in pyproject.toml, read by both the CLI and hatch.

Two tables take the same keys: `[tool.flyte-build]` (where ruff, mypy and uv
users look) and `[tool.hatch.build.targets.flyte]` (hatch's builder table).
Both are read by both front ends and merged key by key; a key set in both
must have the same value (else an error naming both fields), so the CLI and
hatch can never build with different settings. Another `[tool.flyte-*]` table
is an error naming it. One schema names every key, its type and its default;
an unknown key or a bad value is a `UserError` naming the exact TOML field
(and the allowed values), as hatchling's own config classes do. Command-line
flags override the tables.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import schema as schema
from .schema import Table
from ..errors import UserError

TABLE = "tool.hatch.build.targets.flyte"
CLI_TABLE = "tool.flyte-build"
TABLES = (CLI_TABLE, TABLE)
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


@dataclass(frozen=True)
class EnvOverride:
    copy_style: str | None = None
    include: tuple[str, ...] = ()


COPY_STYLE = schema.choice(*COPY_STYLES)
# per-env overrides: `[...flyte.envs.<env>]`
ENV_TABLE = Table(keys={"copy-style": COPY_STYLE, "include": schema.strings})
ENVS_TABLE = Table(each=ENV_TABLE, what="a table of environment names")


# `[...flyte.object-store]`: the client settings of remote stores (stores.remote)
OBJECT_STORE_FIELD = f"{TABLE}.object-store"
DEFAULT_STORE_TIMEOUT = 30.0
S3_KEYS = ("endpoint-url", "region", "profile", "access-key-id", "secret-access-key", "anon")
GCS_KEYS = ("endpoint-url", "project", "token", "anon")
# endpoint-url is the blob endpoint (an emulator's, e.g. Azurite's http://127.0.0.1:10000/devstoreaccount1)
AZURE_KEYS = ("account-name", "account-key", "connection-string", "sas-token", "endpoint-url", "anon")
# grpc:// and grpcs:// (a REAPI v2 cache): the credential's header, where the credential is, the CA for TLS
REAPI_KEYS = ("header", "token-env", "token-file", "ca-file")


def _store_table(keys: tuple[str, ...]) -> Table:
    return Table(keys={k: schema.boolean if k == "anon" else schema.nonempty_string for k in keys})


OBJECT_STORE = Table(keys={
    "timeout": schema.seconds, "s3": _store_table(S3_KEYS), "gcs": _store_table(GCS_KEYS),
    "azure": _store_table(AZURE_KEYS), "reapi": _store_table(REAPI_KEYS),
})


@dataclass(frozen=True)
class StoreOptions:
    """Explicit settings; anything left None comes from the environment as usual
    (AWS_* variables and profiles for S3, STORAGE_EMULATOR_HOST and
    application-default credentials for GCS, AZURE_STORAGE_* variables for
    Azure)."""

    timeout: float = DEFAULT_STORE_TIMEOUT
    s3: dict = field(default_factory=dict)
    gcs: dict = field(default_factory=dict)
    azure: dict = field(default_factory=dict)
    reapi: dict = field(default_factory=dict)


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
    discovery_timeout: float | None = None  # seconds; None: discovery.child_run.DEFAULT_TIMEOUT
    # the project's interpreter (see `interpreter`): relative to the project's directory
    python: str | None = None
    python_source: str | None = None  # "--python" when the flag set it (absolute then)
    storage: str | None = None
    object_store: StoreOptions | None = None  # endpoints, credentials, timeout
    project: str | None = None
    domain: str | None = None
    allow_secrets: tuple[str, ...] = ()
    source_roots: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    jobs: int = max(1, min(8, os.cpu_count() or 1))
    strict: bool = False
    envs: dict[str, EnvOverride] = field(default_factory=dict)
    # the tables a rule set declares (`docker`, `pex`, `deploy`): as written
    # until `with_rule_tables` checks them against their rule sets' schemas
    tables: dict = field(default_factory=dict)
    directory: str = "dist/flyte"
    flyte_config: str | None = None  # flyte's config.yaml given with --config (else flyte's own lookup)
    sources: dict = field(default_factory=dict)  # top-level key -> the table that set it (TABLES)
    daemon: bool | None = None  # None: the resident process is used outside CI
    daemon_idle_timeout: float | None = None  # None: 900 seconds

    def field_name(self, key: str) -> str:
        """The full TOML field of a key, in the table that set it."""
        return f"{self.sources.get(key.split('.', 1)[0], TABLE)}.{key}"

    def copy_style_for(self, env: str) -> str:
        o = self.envs.get(env)
        return o.copy_style if o and o.copy_style else self.copy_style

    def include_for(self, env: str) -> tuple[str, ...]:
        o = self.envs.get(env)
        return o.include if o else ()

    def table(self, name: str) -> dict:
        """A sub-table a rule set declared (its keys checked by that rule set's schema); {} when absent."""
        return self.tables.get(name) or {}

    def with_overrides(self, **kwargs) -> "Config":
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


# The core keys of the table (the key, the Config field, its check). The
# tables of one target kind (`docker`, `pex`, `deploy`) are declared by its rule
# set and checked by `with_rule_tables`.
KEYS: dict[str, tuple[str, schema.Check | Table]] = {
    "root-dir": ("root_dir", schema.string),
    "paths": ("paths", schema.strings),
    "copy-style": ("copy_style", COPY_STYLE),
    "ignore-load-errors": ("ignore_load_errors", schema.boolean),
    "images": ("images", schema.string_table),
    "registry": ("registry", schema.string),
    "cache": ("cache", schema.string),
    "cache-required": ("cache_required", schema.boolean),
    "cache-read-only": ("cache_read_only", schema.boolean),
    "cache-verify-keys": ("cache_verify_keys", schema.strings),
    "cache-signing-key-file": ("cache_signing_key_file", schema.string),
    "discovery-timeout": ("discovery_timeout", schema.seconds),
    "python": ("python", schema.nonempty_string),
    "storage": ("storage", schema.string),
    "object-store": ("object_store", OBJECT_STORE),
    "project": ("project", schema.string),
    "domain": ("domain", schema.string),
    "allow-secrets": ("allow_secrets", schema.strings),
    "source-roots": ("source_roots", schema.strings),
    "rules": ("rules", schema.strings),
    "jobs": ("jobs", schema.positive_int),
    "strict": ("strict", schema.boolean),
    "envs": ("envs", ENVS_TABLE),
    # read by the thin client before anything else (flyte_build.daemon.address); here so they are checked
    "daemon": ("daemon", schema.boolean),
    "daemon-idle-timeout": ("daemon_idle_timeout", schema.seconds),
}
# what a checked table becomes in Config
CONVERT = {
    "envs": lambda v: {e: EnvOverride(**{k.replace("-", "_"): x for k, x in t.items()}) for e, t in v.items()},
    "object_store": lambda v: StoreOptions(**v),
}


def find_pyproject(start: Path, stop_at_home: bool = False) -> Path | None:
    """The nearest pyproject.toml from `start` up; with `stop_at_home`, the
    search stops below the home directory and the filesystem root (a stray
    file there is nobody's project)."""
    start = start.resolve()
    home = _home() if stop_at_home else None
    for d in (start, *start.parents):
        if stop_at_home and d != start and (d == home or d.parent == d):
            return None
        p = d / "pyproject.toml"
        if p.is_file():
            return p
    return None


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (RuntimeError, KeyError):
        return None


def no_project(cwd: Path) -> UserError:
    """Without a project and without a path naming what to import, discovery
    would import every .py under the current directory (a stray script would
    run): refuse instead."""
    return UserError(f"no pyproject.toml in {cwd} or any directory above it: run flyte-build inside a project, "
                     "or name its root with --root-dir")


def read_table(pyproject: Path) -> dict:
    """The merged settings of both tables (see `read_tables`)."""
    return read_tables(pyproject)[0]


def _load_toml(pyproject: Path) -> dict:
    try:
        with open(pyproject, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{pyproject}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{pyproject}: not valid UTF-8 (byte {exc.start}); TOML files are UTF-8") from None
    except OSError as exc:
        raise UserError(f"{pyproject}: cannot read: {exc.strerror}") from None


def _at(data: dict, dotted: str, pyproject: Path) -> dict:
    table: Any = data
    for part in dotted.split("."):
        table = table.get(part, {}) if isinstance(table, dict) else {}
    if not isinstance(table, dict):
        raise UserError(f"{pyproject}: {dotted} must be a table")
    return table


def _check_tool_tables(data: dict, pyproject: Path) -> None:
    """`[tool.flyte-buid]`, `[tool.flyte_build]`: a table meant for us under a
    name nothing reads is an error, not silently ignored."""
    tool = data.get("tool") if isinstance(data.get("tool"), dict) else {}
    for name in sorted(tool):
        flat = name.lower().replace("_", "-")
        if flat.startswith("flyte-") or flat == "flytebuild":
            if name != "flyte-build":
                valid = ", ".join(f"[{t}]" for t in TABLES)
                raise UserError(f"Unknown table [tool.{name}] in {pyproject}; flyte-build reads {valid}")


def read_tables(pyproject: Path, hatch_table: dict | None = None) -> tuple[dict, dict[str, str]]:
    """(both tables merged, top-level key -> the table that set it).
    `hatch_table`: hatch's target table as hatch hands it to the builder (else read here)."""
    data = _load_toml(pyproject)
    _check_tool_tables(data, pyproject)
    cli = _at(data, CLI_TABLE, pyproject)
    hatch = _at(data, TABLE, pyproject) if hatch_table is None else hatch_table
    for key in cli:
        if key in HATCH_TARGET_KEYS:
            # hatch's own target options mean nothing to the CLI's table
            raise schema.unknown_key(CLI_TABLE, key, [*KEYS, "<the tables of the rule sets>"], pyproject)
    merged = dict(hatch)
    sources = {k: TABLE for k in hatch if k not in HATCH_TARGET_KEYS}
    for key, value in cli.items():
        if key in hatch:
            merged[key] = _merged_value(value, hatch[key], key, pyproject)
        else:
            merged[key] = value
        sources[key] = CLI_TABLE if key not in hatch else sources[key]
    return merged, sources


def _merged_value(a: Any, b: Any, key: str, pyproject: Path) -> Any:
    """One key of [tool.flyte-build] (`a`) with the same key of hatch's table (`b`):
    sub-tables merge key by key, anything else must be equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {**b, **{k: (_merged_value(v, b[k], f"{key}.{k}", pyproject) if k in b else v) for k, v in a.items()}}
    if a != b:
        raise UserError(f"{pyproject}: {CLI_TABLE}.{key} = {a!r} and {TABLE}.{key} = {b!r} disagree; "
                        "both tables are read by the CLI and by hatch: set it in one of them")
    return a


def from_table(table: dict, base_dir: Path, pyproject: Path | None = None, sources: dict | None = None) -> Config:
    """Validate a raw table (as hatch hands it to a builder, or both tables
    merged by `read_tables` with their `sources`) into a Config. Keys that are
    not core keys are kept for `with_rule_tables` to check."""
    kwargs: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    root_dir = None
    sources = dict(sources or {})
    where = f" in {pyproject}" if pyproject else ""
    for key, value in table.items():
        field_ = f"{sources.get(key, TABLE)}.{key}"
        if key in HATCH_TARGET_KEYS:
            if key == "directory":
                kwargs["directory"] = schema.string(field_, value)
            continue
        if key not in KEYS:
            tables[key] = value
            continue
        attr, check = KEYS[key]
        if isinstance(check, Table):
            checked = CONVERT[attr](schema.check(check, field_, value, pyproject))
        else:
            checked = check(field_, value)
        if attr == "root_dir":
            root_dir = checked
        else:
            kwargs[attr] = checked
    root = (base_dir / root_dir).resolve() if root_dir else base_dir.resolve()
    if not root.is_dir():
        raise UserError(f"Field {sources.get('root-dir', TABLE)}.root-dir{where}: {root} is not a directory")
    return Config(root=root, pyproject=pyproject, tables=tables, sources=sources, **kwargs)


def with_rule_tables(cfg: Config, tables: dict[str, Table]) -> Config:
    """`cfg` with its kind tables checked against the schemas the loaded rule
    sets declare; a key that is neither a core key nor such a table is unknown."""
    checked = {}
    for key, value in cfg.tables.items():
        table_name = cfg.sources.get(key, TABLE)
        if key not in tables:
            raise schema.unknown_key(table_name, key, [*KEYS, *tables], cfg.pyproject)
        checked[key] = schema.check(tables[key], f"{table_name}.{key}", value, cfg.pyproject)
    return replace(cfg, tables=checked)


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


def load(root_dir: str | Path | None = None, cwd: Path | None = None, require_project: bool = False) -> Config:
    """The config for a run: the table of the nearest pyproject.toml (from
    `root_dir` if given, else the current directory), rooted at `root_dir`,
    else the table's root-dir, else the directory holding pyproject.toml.
    Without `root_dir` and without a pyproject.toml (below the home
    directory) there is no project: a `UserError` if `require_project`."""
    cwd = Path(cwd or os.getcwd())
    start = Path(root_dir).resolve() if root_dir else cwd
    if root_dir and not start.is_dir():
        raise UserError(f"--root-dir {root_dir}: not a directory")
    pyproject = find_pyproject(start, stop_at_home=not root_dir)
    if pyproject is None:
        if require_project and not root_dir:
            raise no_project(cwd)
        return Config(root=start.resolve())
    table, sources = read_tables(pyproject)
    cfg = from_table(table, pyproject.parent, pyproject, sources)
    if root_dir:
        cfg = replace(cfg, root=start.resolve())
    if not cfg.source_roots and src_layout(cfg.root):
        # no configuration needed for a src layout: `src` is its source root
        cfg = replace(cfg, source_roots=("src",))
    return cfg
