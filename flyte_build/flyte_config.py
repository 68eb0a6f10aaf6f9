"""Where flyte's own configuration file is, found as the `flyte` CLI finds it.

flyte-build reads the same config.yaml as `flyte deploy`: the core its
project, domain and image settings (discovery initialises flyte with them),
the deploy kind its backend settings (rules/deploy/backend_settings.py). Its
*values* are read by flyte's own loader, through `flyte_adapter`, only when
discovery or a deploy actually runs. This module only *locates* the file and fingerprints it, with
no import of flyte or yaml, so a no-op build can key its cached discovery on
the file's digest (and the FLYTE_* variables flyte's loader would read) and
still import nothing.

The lookup order is flyte's (`flyte.config._reader.resolve_config_path`,
flyte 2.12), checked by a differential test: `--config FILE`, else
`./config.yaml`, `./.flyte/config.yaml`, `<git root>/.flyte/config.yaml`,
`$UCTL_CONFIG`, `$FLYTECTL_CONFIG`, `~/.union/config.yaml`,
`~/.flyte/config.yaml`, all relative to the directory the command runs in.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

# Variables flyte's loader reads for the settings that change what discovery
# sees (task.* and image.*; flyte derives FLYTE_<SECTION>_<KEY> from the YAML
# key). A contract test compares this list with flyte's own entries.
DISCOVERY_ENV = (
    "FLYTE_TASK_ORG", "FLYTE_TASK_PROJECT", "FLYTE_TASK_DOMAIN",
    "FLYTE_IMAGE_BUILDER", "FLYTE_IMAGE_IMAGE_REFS", "FLYTE_IMAGE_REGISTRY",
)
# Secret-bearing variables: only their digest goes into keys and records.
SECRET_ENV = ("FLYTE_API_KEY",)
MASK = "********"


@dataclass(frozen=True)
class ConfigRef:
    """The flyte config file a run uses (None: none found) and how it was found."""

    path: str | None
    found_by: str  # "--config", "./config.yaml", "$FLYTECTL_CONFIG", ..., or "none"
    digest: str | None = None  # sha256 of the file's bytes
    env: dict = field(default_factory=dict)  # the DISCOVERY_ENV variables that are set

    def fingerprint(self) -> dict:
        """Plain data for cache keys: the file's bytes' digest (not its path, so
        checkouts and machines share keys) and the variables that override it
        (secrets by digest only)."""
        secrets = {k: hashlib.sha256(os.environ[k].encode()).hexdigest() for k in SECRET_ENV if os.environ.get(k)}
        return {"digest": self.digest, "env": dict(sorted(self.env.items())), "secrets": secrets}


def _git_root(start: Path) -> Path | None:
    # flyte asks `git rev-parse --show-toplevel`; the nearest directory holding
    # `.git` (a directory, or a file in a worktree) is the same answer without
    # a subprocess on every run
    from .discovery.reads import git_top

    return git_top(start)


def _candidates(cwd: Path, env) -> list[tuple[str, Path | None, bool]]:
    """(found_by, path, must_exist) in flyte's order; an env variable's path is
    taken as given (flyte does not check it exists)."""
    home = Path(env.get("HOME") or Path.home())
    out: list[tuple[str, Path | None, bool]] = [
        ("./config.yaml", cwd / "config.yaml", True),
        ("./.flyte/config.yaml", cwd / ".flyte" / "config.yaml", True),
    ]
    root = _git_root(cwd)
    out.append(("<git root>/.flyte/config.yaml", root / ".flyte" / "config.yaml" if root else None, True))
    for var in ("UCTL_CONFIG", "FLYTECTL_CONFIG"):
        out.append((f"${var}", Path(env[var]) if env.get(var) else None, False))
    out.append(("~/.union/config.yaml", home / ".union" / "config.yaml", True))
    out.append(("~/.flyte/config.yaml", home / ".flyte" / "config.yaml", True))
    return out


def locate(explicit: str | None = None, cwd: Path | None = None, env=None) -> ConfigRef:
    """The config file `flyte` would use when run in `cwd` (default: here)."""
    env = os.environ if env is None else env
    cwd = Path(cwd or os.getcwd())
    chosen: tuple[str, Path] | None = None
    if explicit:
        p = Path(explicit).expanduser()
        chosen = ("--config", p if p.is_absolute() else cwd / p)
    else:
        for found_by, path, must_exist in _candidates(cwd, env):
            if path is not None and (not must_exist or path.exists()):
                chosen = (found_by, path if path.is_absolute() else cwd / path)
                break
    overrides = {k: env[k] for k in DISCOVERY_ENV if k in env}
    if chosen is None:
        return ConfigRef(None, "none", None, overrides)
    found_by, path = chosen
    try:
        data = path.read_bytes()
    except OSError as exc:
        what = "--config" if found_by == "--config" else f"flyte's config ({found_by})"
        raise UserError(f"{what} {path}: cannot read: {exc.strerror}") from None
    return ConfigRef(str(path), found_by, hashlib.sha256(data).hexdigest(), overrides)


def mask(value) -> str | None:
    """A secret as shown: whether it is set, never any of its characters."""
    return MASK if value else None


# -- effective settings: flyte's config, then the pyproject table, then flags -----

# The settings of flyte's config file the core reads (discovery initialises
# flyte with them; the project, domain and images are the run's):
# setting -> (pyproject key under the flyte-build table, command-line flag);
# None: not settable there. A kind that reads more of the file (the deploy
# kind: the backend's) layers its own settings the same way (`effective`).
LAYERS = {
    "project": ("project", "--project"),
    "domain": ("domain", "--domain"),
    "image_builder": (None, None),
    "image_registry": ("registry", None),
    "image_refs": ("images", "--image"),
}


@dataclass(frozen=True)
class Setting:
    value: object
    source: str
    secret: bool = False

    def shown(self):
        return mask(self.value) if self.secret else self.value


def effective(loaded: dict, table: dict, flags: dict, pyproject: str | None = None,
              sources: dict | None = None, layers: dict | None = None, secrets=()) -> dict[str, Setting]:
    """Each setting's value and where it came from: flyte's configuration
    (`loaded`, from `load`), over it the pyproject table (`table`: key as in
    `layers` -> value), over that the command line (`flags`: setting -> value,
    None when not given). `layers`: setting -> (pyproject key, flag), default
    the core's `LAYERS`; `secrets`: the settings shown masked. `image_refs`
    merge by name. `sources`: top-level key -> the pyproject table that set it."""
    from .config.settings import TABLE

    out: dict[str, Setting] = {}
    for name, (key, flag) in (LAYERS if layers is None else layers).items():
        got = loaded.get(name) or {"value": None, "source": "default"}
        value, source = got["value"], got["source"]
        if key and table.get(key) is not None:
            where = f"{pyproject}: " if pyproject else ""
            if name == "image_refs":
                value = {**(value or {}), **table[key]}
            else:
                value = table[key]
            source = f"{where}{(sources or {}).get(key.split('.', 1)[0], TABLE)}.{key}"
        if flag and flags.get(name) not in (None, {}, ()):
            value = {**(value or {}), **flags[name]} if name == "image_refs" else flags[name]
            source = f"flag {flag}"
        out[name] = Setting(value, source, name in secrets)
    return out


def shown(settings: dict[str, Setting]) -> dict:
    """JSON-able {setting: {"value", "source"}} with secrets masked."""
    return {k: {"value": s.shown(), "source": s.source} for k, s in settings.items()}


def checked_layer(layer) -> dict:
    """The flyte layer a discovery result carries (maybe from a shared store, so
    untrusted): only the core's settings with string values (image refs: a table
    of strings) pass; anything else is dropped, as if unset."""
    out: dict = {}
    if not isinstance(layer, dict):
        return out
    for name, got in layer.items():
        if name not in LAYERS or not isinstance(got, dict):
            continue
        value, source = got.get("value"), got.get("source")
        ok = value is None or isinstance(value, str)
        if name == "image_refs":
            ok = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        if ok and isinstance(source, str):
            out[name] = {"value": value, "source": source}
    return out


def layers(table_cfg, settings) -> dict:
    """The pyproject and command-line layers of the core's settings, as plain data
    for `effective`: `table_cfg` is the Config read from pyproject.toml (before
    any flag), `settings` the run's workspace.Settings (flags)."""
    table = {"project": table_cfg.project, "domain": table_cfg.domain, "registry": table_cfg.registry,
             "images": dict(table_cfg.images) or None}
    flags = {"project": settings.project, "domain": settings.domain, "image_refs": dict(settings.images) or None}
    return {"table": table, "flags": flags, "pyproject": str(table_cfg.pyproject) if table_cfg.pyproject else None,
            "sources": dict(table_cfg.sources)}


def load(ref: ConfigRef) -> dict:
    """Every setting of flyte's config file `ref`, secrets included, as flyte's own
    loader reads it (imports flyte): {setting: {"value", "source"}}."""
    from . import flyte_adapter as fa

    try:
        return fa.read_flyte_config(ref.path)
    except ValueError as exc:
        raise UserError(str(exc)) from None
