"""Loading rule sets: the built-in one and any the repository declares.

A rule set is a directory with a `register.py` defining `rules()`. It is
loaded by path as a package, so its modules can import each other relatively
(`from .bundle import rule`) and nothing needs to be installed.

The built-in set's register.py may also define, as Pants backends register
goals, `commands()` (CLI subcommand modules: `add_parser(sub, parents)` and
`run(args)`, optionally `AFTER = "<command it follows in the help>"`), `api()`
(names added to `flyte_build`'s Python API and goals, e.g. `plan`) and
`settings_rows(table_cfg, cfg, settings)` (rows of `flyte-build config`), and
`config_options(parser)`, `config_params(args)` and `flyte_config_rows(loaded,
table_cfg, settings)` (flags of `flyte-build config`, the run parameters they
make and the rows of its flyte config section). The
built-in set's register.py gathers these from each kind folder's own
register.py (rules/register.py). The core calls these hooks; it names no kind.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..config import settings as config_mod
from ..errors import UserError
from ..rule_api import ConfigTable, Rule

_BUILTIN_PACKAGE = "flyte_build._builtin_rules"


def builtin_dir() -> Path:
    here = Path(__file__).resolve().parents[1]  # flyte_build/
    for candidate in (here / "_builtin_rules", here.parent / "rules"):
        if (candidate / "register.py").is_file():
            return candidate
    raise RuntimeError("flyte-build's built-in rules are missing from this installation")


def _as_package(directory: Path, package: str) -> None:
    """Make `directory` importable as `package` (once per process)."""
    if package in sys.modules:
        return
    register = directory / "register.py"
    init = directory / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        package, init if init.is_file() else register, submodule_search_locations=[str(directory)]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[package] = mod
    if init.is_file():
        spec.loader.exec_module(mod)


def builtin(name: str):
    """A module of the built-in rule set by its dotted name in it, e.g. `builtin("image.dockerfile")`."""
    _as_package(builtin_dir(), _BUILTIN_PACKAGE)
    return importlib.import_module(f"{_BUILTIN_PACKAGE}.{name}")


def _builtin_register():
    return builtin("register")


def builtin_rules() -> dict[str, Rule]:
    """The built-in rule set's rules by kind (no repository config needed)."""
    return {r.kind: r for r in _builtin_register().rules()}


def commands() -> list:
    """The CLI subcommand modules the built-in rule set contributes."""
    hook = getattr(_builtin_register(), "commands", None)
    return list(hook()) if hook else []


def settings_rows(table_cfg, cfg, settings) -> dict:
    """Rows the built-in rule set's kinds add to `flyte-build config`'s report."""
    hook = getattr(_builtin_register(), "settings_rows", None)
    return dict(hook(table_cfg, cfg, settings)) if hook else {}


def config_options(parser) -> None:
    """Flags the built-in rule set's kinds add to `flyte-build config`."""
    hook = getattr(_builtin_register(), "config_options", None)
    if hook:
        hook(parser)


def config_params(args) -> tuple:
    """The kinds' run parameters (see `View.run_params`) from `flyte-build config`'s flags."""
    hook = getattr(_builtin_register(), "config_params", None)
    return tuple(hook(args)) if hook else ()


def flyte_config_rows(loaded: dict, table_cfg, settings) -> dict:
    """The settings of flyte's config file the kinds read ({name: flyte_config.Setting}),
    from `loaded` (flyte_config.load) under the pyproject table and the run's flags."""
    hook = getattr(_builtin_register(), "flyte_config_rows", None)
    return dict(hook(loaded, table_cfg, settings)) if hook else {}


def api(name: str):
    """A name the built-in rule set adds to the Python API (a goal such as `plan`, or a result type)."""
    hook = getattr(_builtin_register(), "api", None)
    table = hook() if hook else {}
    if name not in table:
        raise AttributeError(name)
    return table[name]


def load_dir(directory: Path, package: str) -> list[Rule]:
    register = directory / "register.py"
    if not register.is_file():
        raise UserError(f"rule set {directory}: no register.py")
    _as_package(directory, package)
    try:
        reg = importlib.import_module(f"{package}.register")
        rules = list(reg.rules())
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"rule set {directory}: register.py failed: {type(exc).__name__}: {exc}") from None
    for r in rules:
        if not isinstance(r, Rule):
            raise UserError(f"rule set {directory}: rules() returned {r!r}, not a Rule")
    return rules


def _sets(root: Path, extra: tuple[str, ...]) -> list[tuple[Path, str]]:
    sets = [(builtin_dir(), _BUILTIN_PACKAGE)]
    for i, rel in enumerate(extra):
        d = (root / rel).resolve()
        if not d.is_dir():
            raise UserError(f"Field tool.hatch.build.targets.flyte.rules: {rel} is not a directory")
        sets.append((d, f"flyte_build_user_rules_{i}"))
    return sets


def config_tables(root: Path, extra: tuple[str, ...]) -> dict[str, ConfigTable]:
    """The config tables the rule sets declare (`config_tables()` in their
    register.py), by table name; call after `load_all`."""
    tables: dict[str, ConfigTable] = {}
    for directory, package in _sets(root, extra):
        declare = getattr(sys.modules.get(f"{package}.register"), "config_tables", None)
        for name, table in (declare() if declare else {}).items():
            if name in tables:
                raise UserError(f"two rule sets declare the config table `{name}` (the second in {directory})")
            tables[name] = table
    return tables


def load_all(root: Path, extra: tuple[str, ...]) -> dict[str, Rule]:
    by_kind: dict[str, Rule] = {}
    for directory, package in _sets(root, extra):
        for rule in load_dir(directory, package):
            if rule.kind in by_kind:
                raise UserError(f"two rules define the target kind `{rule.kind}` (the second in {directory})")
            by_kind[rule.kind] = rule
    return by_kind


def checked_config(cfg: config_mod.Config) -> tuple[config_mod.Config, dict[str, Rule]]:
    """Load the rule sets `cfg` names and check its tables against the schemas
    they declare: (the checked config, the rules by kind)."""
    rules = load_all(cfg.root, cfg.rules)
    return config_mod.with_rule_tables(cfg, config_tables(cfg.root, cfg.rules)), rules
