"""`flyte-build config`: the effective settings and where each came from.

flyte's own config file (found as the `flyte` CLI finds it and read by its
loader), under it flyte's defaults, over it the pyproject table, over that
the flags. Secrets are shown as set or not, never their characters.
"""

from __future__ import annotations

from .common import emit_json, settings_from_args

HELP = "every effective setting (flags, environment, pyproject tables, flyte's config file, defaults) and where each came from"
EXAMPLES = (
    ("flyte-build config", "every setting, its value and where it came from"),
    ("flyte-build config --endpoint dns:///flyte.example.com --json", "with a flag over the files, as JSON"),
)


def add_parser(sub, parents):
    from ..engine import rulesets

    p = sub.add_parser("config", help=HELP, description=HELP, parents=parents)
    rulesets.config_options(p)  # a kind's flags over flyte's config file (the deploy kind's backend)
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def run(args) -> int:
    from ..config import settings as config_mod
    from .. import flyte_config
    from ..engine import rulesets

    from ..workspace import with_flags
    from .settings_report import report

    settings = settings_from_args(args, run_params=rulesets.config_params(args))
    table_cfg, _ = rulesets.checked_config(config_mod.load(settings.root_dir))
    ours = report(table_cfg, with_flags(table_cfg, settings), settings)
    ref = flyte_config.locate(settings.flyte_config)
    loaded = flyte_config.load(ref)
    # the kinds' settings (the backend's), then the core's (project, domain, images)
    values = {**rulesets.flyte_config_rows(loaded, table_cfg, settings),
              **flyte_config.effective(loaded, **flyte_config.layers(table_cfg, settings))}
    shown = flyte_config.shown(values)
    doc = {"flyte_config": ref.path, "found_by": ref.found_by, "pyproject": str(table_cfg.pyproject) if table_cfg.pyproject else None,
           "root": str(table_cfg.root), "settings": shown, "flyte_build": ours}
    if args.json:
        emit_json(doc)
        return 0
    from rich.console import Console

    pyproject = f"pyproject: {table_cfg.pyproject}" if table_cfg.pyproject else "pyproject: none found (defaults)"
    flyte_title = f"flyte config: {ref.path} (found as {ref.found_by})" if ref.path else "flyte config: none found (flyte's defaults)"
    console = Console(emoji=False)
    files = [f for f in (table_cfg.pyproject, ref.path) if f]  # the titles name them whole
    console.print(_table(f"flyte-build settings ({pyproject})", ours, console.width, files))
    console.print(_table(flyte_title, shown, console.width, files))
    return 0


WIDE = 120  # from here on a `from` column fits most sources on one line


def _table(title: str, rows: dict, width: int, titled_files=()):
    """Three columns on a wide console; on a narrow one (an 80-column CI log) the
    source goes under its value, where it has the room of both columns, and the
    files the titles name are shortened to their names, so a source folds at its
    spaces instead of mid-word."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    table.add_column("setting", overflow="fold", min_width=min(30, max((len(n) for n in rows), default=7)))
    narrow = width < WIDE
    for col in (("value (from)",) if narrow else ("value", "from")):
        table.add_column(col, overflow="fold")
    for name, s in rows.items():
        v = "-" if s["value"] in (None, [], {}) else str(s["value"])
        if narrow:
            source = _short(s["source"], titled_files)
            table.add_row(name, f"{escape(v)}\n[dim]from {escape(source)}[/dim]")
        else:
            table.add_row(name, v, s["source"])
    return table


def _short(source: str, titled_files) -> str:
    """`<a titled file>: key` as `<its name>: key` (the title holds the whole path)."""
    from pathlib import Path

    for f in titled_files:
        source = source.replace(f"{f}:", f"{Path(f).name}:")
    return source
