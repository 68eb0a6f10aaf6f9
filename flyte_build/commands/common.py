"""Options and output shared by the commands."""

from __future__ import annotations

import argparse
import json
import sys

from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:  # imported where used: `--help` needs neither discovery nor the workspace
    from ..workspace import Settings, Workspace


def global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options valid before or after the command (mirroring `flyte deploy`)."""
    d = argparse.SUPPRESS if suppress else None
    g = parser.add_argument_group("global options")
    g.add_argument("--root-dir", default=d, help="the sys.path root and bundle root (default: the directory holding pyproject.toml)")
    g.add_argument("--copy-style", choices=["loaded_modules", "all", "none"], default=d, help="what goes into bundles")
    g.add_argument("--image", action="append", metavar="[NAME=]URI", default=d,
                   help="resolve Image.from_ref_name(NAME) to URI; a URI without NAME= is the default image, for image=\"auto\" (repeatable)")
    g.add_argument("--ignore-load-errors", "-i", action="store_true", default=d, help="skip modules that fail to import, reporting each")
    g.add_argument("--cache", metavar="URL", default=d, help="a shared cache: a path, file://, s3://, gs:// or az:// URL")
    g.add_argument("--cache-required", action="store_true", default=d, help="fail when the shared cache cannot be reached")
    g.add_argument("--cache-read-only", dest="cache_read_only", action="store_const", const=True, default=d,
                   help="read the shared cache, never write it (default outside CI unless holding a signing key)")
    g.add_argument("--cache-write", dest="cache_read_only", action="store_const", const=False, default=d,
                   help="publish results to the shared cache (default in CI, or when holding a signing key)")
    g.add_argument("--allow-secrets", action="append", metavar="PATTERN", default=d,
                   help="ship secret-looking files matching PATTERN anyway (repeatable; adds to config allow-secrets)")
    g.add_argument("--discovery-timeout", type=_seconds, metavar="SECONDS", default=d,
                   help="stop discovery when importing the modules takes longer (default: config, else 300)")
    g.add_argument("--python", metavar="PATH", default=d,
                   help="the project's interpreter, which imports its modules (default: config `python`, "
                        "$VIRTUAL_ENV, a .venv up to the git root, else this one)")
    g.add_argument("--storage", metavar="URL", default=d, help="upload built bundles here (a path, file://, s3://, gs:// or az:// URL), named by digest")
    g.add_argument("--cache-dir", metavar="DIR", default=d, help="the local cache (default $FLYTE_BUILD_CACHE_DIR, else $XDG_CACHE_HOME/flyte-build)")
    g.add_argument("--project", "-p", default=d, help="Flyte project (discovery runs with it initialised)")
    g.add_argument("--domain", "-d", default=d, help="Flyte domain (discovery runs with it initialised)")
    g.add_argument("--strict", action="store_true", default=d, help="turn checks that warn into errors")
    g.add_argument("--config", "-c", dest="flyte_config", metavar="FILE", default=d,
                   help="flyte's config.yaml (default: the one the `flyte` CLI finds)")
    g.add_argument("--verbose", "-v", action="count", default=d,
                   help="more output: failures in full and, outside a terminal, every log line of a running target")
    g.add_argument("--no-daemon", action="store_true", default=d,
                   help="run in this process, not in the repository's resident process (config `daemon = false`)")
    g.add_argument("--daemon-idle-timeout", type=_seconds, metavar="SECONDS", default=d,
                   help="the resident process exits after this long without a command (default: config, else 900)")
    g.add_argument("--quiet", "-q", action="store_true", default=d, help="less output: no progress, only the summary and errors")
    if suppress:  # accepted after the command, described once in the top-level help
        for action in g._group_actions:
            action.help = argparse.SUPPRESS


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", help="a Python file or a directory (default: the whole root)")
    parser.add_argument("env_var", nargs="?", help="the variable naming one environment in PATH")
    parser.add_argument("--all", action="store_true", help="every environment loaded from the file (or the directory's own .py files)")
    parser.add_argument("--recursive", "-r", action="store_true", help="every environment loaded from the directory tree")


def parse_images(values) -> dict[str, str]:
    out = {}
    for v in values or []:
        if "=" not in v:
            # as `flyte deploy --image URI`: the default image (flyte's ref name "default")
            if not v:
                raise UserError("--image '': expected [NAME=]URI")
            out["default"] = v
            continue
        name, uri = v.split("=", 1)
        if not name or not uri:
            raise UserError(f"--image {v!r}: expected NAME=URI")
        out[name] = uri
    return out


def settings_from_args(args: argparse.Namespace, **more) -> Settings:
    """A run's Settings from the parsed global options; `more`: other Settings fields."""
    from ..discovery.discover import Selection
    from ..workspace import Settings

    path = getattr(args, "path", None)
    sel = Selection(
        paths=(path,) if path else (),
        variable=getattr(args, "env_var", None),
        all=bool(getattr(args, "all", False)),
        recursive=bool(getattr(args, "recursive", False)),
    )
    return Settings(
        root_dir=getattr(args, "root_dir", None),
        selection=sel,
        copy_style=getattr(args, "copy_style", None),
        images=parse_images(getattr(args, "image", None)),
        ignore_load_errors=True if getattr(args, "ignore_load_errors", None) else None,
        cache=getattr(args, "cache", None),
        cache_required=True if getattr(args, "cache_required", None) else None,
        cache_read_only=getattr(args, "cache_read_only", None),
        discovery_timeout=getattr(args, "discovery_timeout", None),
        python=getattr(args, "python", None),
        allow_secrets=tuple(getattr(args, "allow_secrets", None) or ()),
        cache_dir=getattr(args, "cache_dir", None),
        storage=getattr(args, "storage", None),
        project=getattr(args, "project", None),
        domain=getattr(args, "domain", None),
        strict=True if getattr(args, "strict", None) else None,
        flyte_config=getattr(args, "flyte_config", None),
        **more,
    )


def workspace(args: argparse.Namespace, **more) -> Workspace:
    from ..workspace import Workspace

    ws = Workspace(settings_from_args(args, **more))
    for n in ws.notes:
        sys.stderr.write(f"flyte-build: note: {n}\n")
    return ws


# the version of every --json document's shape (BUILD.md, "JSON output"): a
# field renamed or removed raises it; a field added does not
SCHEMA_VERSION = 1


def json_text(doc: dict) -> str:
    """A --json document as printed: its schema version and `ok` (true unless it says otherwise) added."""
    doc = {"schema_version": SCHEMA_VERSION, "ok": True, **doc}
    return json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"


def verbosity(args: argparse.Namespace) -> int:
    """-1 with -q, 0 by default, else the number of -v."""
    return -1 if getattr(args, "quiet", None) else (getattr(args, "verbose", None) or 0)


def emit_json(doc: dict) -> None:
    sys.stdout.write(json_text(doc))


def emit_json_error(message: str, exit_code: int) -> None:
    """A command asked for --json failed before its document: the error as one."""
    emit_json({"ok": False, "error": message, "exit_code": exit_code})


def wants_json(argv: list[str]) -> bool:
    return "--json" in argv or "--format=json" in argv or any(
        a == "--format" and b == "json" for a, b in zip(argv, argv[1:]))


def warn(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True, emoji=False).print(f"[yellow]warning:[/] {msg}", highlight=False)
