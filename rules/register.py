"""The built-in rule set's registration: it collects what each kind registers.

Every kind folder registers itself in its own `register.py` (as a Pants backend
does): any of `rules()`, `commands()`, `api()`, `config_tables()`,
`settings_rows(...)`, and for `flyte-build config` `config_options(parser)`,
`config_params(args)` and `flyte_config_rows(...)`, each optional. This module only gathers them, in the
order of `KINDS` (the order targets are listed and planned in); it names no
kind's rule, command, goal or table.

A kind's register.py imports its heavy modules inside its hooks: `flyte-build
--help` reads only `commands()`, and the image rule alone costs more than the
rest of the help.
"""

import importlib

# the kind folders, in the order their targets are made for each env
KINDS = ("bundle", "pex", "image", "specs", "check", "deploy")


def _kind_registers():
    return [importlib.import_module(f".{kind}.register", __package__) for kind in KINDS]


def _hooks(name: str):
    return [hook for hook in (getattr(reg, name, None) for reg in _kind_registers()) if hook is not None]


def _merged(name: str, *args) -> dict:
    """The kinds' `name(*args)` dicts as one; a name two kinds register is a bug here."""
    out: dict = {}
    for hook in _hooks(name):
        for key, value in hook(*args).items():
            if key in out:
                raise RuntimeError(f"two built-in kinds register `{key}` in {name}()")
            out[key] = value
    return out


def rules():
    return [rule for hook in _hooks("rules") for rule in hook()]


def commands():
    """CLI subcommand modules the kinds add (see flyte_build.engine.rulesets)."""
    return [mod for hook in _hooks("commands") for mod in hook()]


def api():
    """Goals and result types the kinds add to flyte_build's Python API."""
    return _merged("api")


def config_tables():
    """The tables of `[tool.hatch.build.targets.flyte]` the kinds read."""
    return _merged("config_tables")


def settings_rows(*args):
    """Rows the kinds add to `flyte-build config`'s report ({setting: {"value", "source"}})."""
    return _merged("settings_rows", *args)


def config_options(parser):
    """Flags the kinds add to `flyte-build config` (each shown in its report)."""
    for hook in _hooks("config_options"):
        hook(parser)


def config_params(args) -> tuple:
    """The kinds' run parameters from `flyte-build config`'s flags."""
    return tuple(p for hook in _hooks("config_params") for p in hook(args))


def flyte_config_rows(*args):
    """Rows the kinds add to `flyte-build config`'s section for flyte's config file."""
    return _merged("flyte_config_rows", *args)
