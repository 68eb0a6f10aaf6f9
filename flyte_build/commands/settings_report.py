"""flyte-build's own effective settings for `flyte-build config`, each with
where it came from: a flag, an environment variable, a key of one of the two
pyproject tables, or the default."""

from __future__ import annotations

import os
from dataclasses import fields

from ..config import settings as config_mod
from ..config.settings import Config, StoreOptions

# Config field -> the flag that sets it (the run's Settings field of the same name)
FLAGS = {
    "copy_style": "--copy-style", "ignore_load_errors": "--ignore-load-errors", "cache": "--cache",
    "cache_required": "--cache-required", "cache_read_only": "--cache-read-only/--cache-write",
    "discovery_timeout": "--discovery-timeout", "storage": "--storage", "project": "--project",
    "domain": "--domain", "jobs": "--jobs", "strict": "--strict", "allow_secrets": "--allow-secrets",
    "flyte_config": "--config",
}
SECRET_KEYS = ("secret-access-key", "account-key", "connection-string", "sas-token")
MASK = "********"


def report(table_cfg: Config, cfg: Config, settings) -> dict[str, dict]:
    """{setting: {"value", "source"}}: `table_cfg` as read from pyproject.toml,
    `cfg` with the flags over it, `settings` the run's flags."""
    rows: dict[str, dict] = {"root": _row(str(cfg.root), _root_source(table_cfg, settings))}
    defaults = {f.name: f.default for f in fields(Config) if not callable(f.default_factory)}
    for key, (attr, _) in config_mod.KEYS.items():
        if key == "root-dir":
            continue
        value = getattr(cfg, attr)
        if attr == "discovery_timeout" and value is None:
            from ..discovery.child_run import DEFAULT_TIMEOUT

            value = DEFAULT_TIMEOUT
        if key == "object-store":  # its timeout has a default even when the table is absent
            source = _table_source(table_cfg, key) if key in table_cfg.sources else "default"
            rows.update(_flattened(key, _plain(value or StoreOptions()), source))
            continue
        if key == "envs" and key in table_cfg.sources:
            rows.update(_flattened(key, _plain(value), _table_source(table_cfg, key)))
            continue
        rows[key] = _row(_plain(value), _source(table_cfg, settings, key, attr, defaults))
    rows["directory"] = _row(cfg.directory, _table_source(table_cfg, "directory") if "directory" in table_cfg.sources else "default")
    for name, table in sorted(cfg.tables.items()):
        rows.update(_flattened(name, table, _table_source(table_cfg, name)))
    rows["cache-dir"] = _row(*_cache_dir(settings))
    rows["python"] = _python(cfg, rows["cache-dir"]["value"])
    rows["cache-writes"] = _row(*_cache_writes(cfg, table_cfg, settings))
    from ..engine import rulesets

    rows.update(rulesets.settings_rows(table_cfg, cfg, settings))  # a kind's own settings
    rows.update(_daemon_rows(cfg, rows))
    return rows


def _daemon_rows(cfg: Config, rows: dict) -> dict[str, dict]:
    """Whether commands run in the resident process, decided as its thin client decides."""
    from ..daemon.address import DEFAULT_IDLE_TIMEOUT, ENV, SWITCH

    given = os.environ.get(ENV, "").strip().lower()
    if given in SWITCH:
        on = _row(SWITCH[given], f"env ${ENV}")
    elif cfg.daemon is not None:
        on = rows["daemon"]
    else:
        on = _row(not os.environ.get("CI"), "default (off when $CI is set)")
    idle = rows["daemon-idle-timeout"] if cfg.daemon_idle_timeout is not None else _row(DEFAULT_IDLE_TIMEOUT, "default")
    return {"daemon": on, "daemon-idle-timeout": idle}


def _row(value, source: str) -> dict:
    return {"value": value, "source": source}


def _plain(value):
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


def _flattened(prefix: str, value, source: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for k, v in sorted((value or {}).items()):
        name = f"{prefix}.{k}".replace("_", "-")
        if isinstance(v, dict):
            out.update(_flattened(name, v, source))
        elif v not in (None, (), [], {}):
            out[name] = _row(MASK if k in SECRET_KEYS else _plain(v), source)
    return out


def _table_source(table_cfg: Config, key: str) -> str:
    return f"{table_cfg.pyproject}: {table_cfg.field_name(key)}"


def _source(table_cfg: Config, settings, key: str, attr: str, defaults: dict) -> str:
    flag = FLAGS.get(attr)
    given = getattr(settings, attr, None) if flag else None
    if given not in (None, (), {}):
        return f"flag {flag}"
    if attr == "images" and settings.images:
        return "flag --image"
    if key in table_cfg.sources:
        return _table_source(table_cfg, key)
    if attr == "source_roots" and table_cfg.source_roots:
        return "src layout (src/ beside pyproject.toml)"
    if attr == "jobs":
        return "default (CPUs, at most 8)"
    return "default"


def _root_source(table_cfg: Config, settings) -> str:
    if settings.root_dir:
        return "flag --root-dir"
    if "root-dir" in table_cfg.sources:
        return _table_source(table_cfg, "root-dir")
    return "the directory holding pyproject.toml" if table_cfg.pyproject else "the current directory (no pyproject.toml)"


def _python(cfg: Config, cache_dir: str) -> dict:
    """The project's interpreter, why it was chosen, and its versions (None where it cannot say)."""
    from pathlib import Path

    from ..config import interpreter
    from ..errors import UserError

    path, why = interpreter.choose(cfg)
    try:
        got = interpreter.of(cfg, Path(cache_dir))
        versions = {"python": ".".join(map(str, got.python)), "flyte": got.flyte}
    except UserError:
        versions = {"python": None, "flyte": None}
    return {"value": path, "source": why, **versions}


def _cache_dir(settings) -> tuple[str, str]:
    from ..stores.cache_dir import default_cache_path

    if settings.cache_dir:
        return os.path.abspath(settings.cache_dir), "flag --cache-dir"
    for var in ("FLYTE_BUILD_CACHE_DIR", "XDG_CACHE_HOME"):
        if os.environ.get(var):
            return default_cache_path(), f"env ${var}"
    return default_cache_path(), "default"


def _cache_writes(cfg: Config, table_cfg: Config, settings) -> tuple[str, str]:
    """Whether a run publishes to the shared cache, and why (as `read_only_mode` decides)."""
    from ..errors import UserError
    from ..stores.shared_cache import in_ci, load_signer, load_verifier, read_only_reason

    if not cfg.cache:
        return "no shared cache", "cache unset"
    if cfg.cache_read_only is not None:
        how = "flag --cache-read-only/--cache-write" if settings.cache_read_only is not None else _table_source(table_cfg, "cache-read-only")
        return ("read only" if cfg.cache_read_only else "publish"), how
    try:
        signer, verifier = load_signer(cfg.cache_signing_key_file), load_verifier(tuple(cfg.cache_verify_keys))
    except UserError as exc:
        return "unknown", str(exc)
    why = read_only_reason(None, signer, verifier)
    if why is not None:
        return "read only", f"default: {why}; --cache-write publishes"
    return "publish", "a signing key" if signer is not None else "env $CI" if in_ci() else "default"
