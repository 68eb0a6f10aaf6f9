"""The `flyte-build` command. Exit status: 0 success, 1 a build or deploy failed, 2 bad input or usage."""

from __future__ import annotations

import os
import sys

from .__about__ import __version__


def parser():
    import argparse
    import importlib

    from .engine import rulesets
    from .commands import COMMANDS
    from .commands.common import global_options

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # kept for a --json run's error document, then argparse's own exit
            _USAGE_ERRORS.append(f"{self.prog}: {message}")
            super().error(message)

    p = Parser(prog="flyte-build", description=DESCRIPTION, epilog=EPILOG,
                                usage="flyte-build [-h] [--version] [global options] COMMAND [options]",
                                formatter_class=_formatter())
    p.add_argument("--version", action="version", version=f"flyte-build {__version__}")
    # the commands first in the help, then the global options
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, title="commands", prog="flyte-build")
    global_options(p, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    global_options(common, suppress=True)  # valid after the command too, listed once (in the top-level help)
    modules = {}
    ordered = [importlib.import_module(f".commands.{name}", __package__) for name in COMMANDS]
    for mod in rulesets.commands():  # placed after the command they name, for the help's order
        after = [m.__name__.rsplit(".", 1)[-1] for m in ordered].index(getattr(mod, "AFTER", COMMANDS[-1])) + 1
        ordered.insert(after, mod)
    for mod in ordered:
        sp = mod.add_parser(sub, [common])
        sp.formatter_class = _formatter()
        sp.epilog = _examples(sp.prog, getattr(mod, "EXAMPLES", ()))
        modules[sp.prog.split()[-1]] = mod
    return p, modules


_USAGE_ERRORS: list[str] = []
DESCRIPTION = "A build system for Flyte v2 projects: code bundles, images, PEX files and ordered deploys."
EPILOG = """examples:
  flyte-build build                   # every environment's code bundle, a table
  flyte-build build 'image:*' --json  # every image, one JSON document on stdout
  flyte-build deploy --dry-run        # the deploy plan, offline
  flyte-build explain bundle:ml_training  # why a target would rebuild

`flyte-build COMMAND --help` shows a command's options and examples; the global
options above go before or after the command. The guide: BUILD.md (Quickstart)."""


def _formatter():
    import argparse

    class Formatter(argparse.HelpFormatter):
        """Descriptions wrapped to the terminal, the examples as written."""

        def _fill_text(self, text, width, indent):
            return text if text.startswith("examples:") else super()._fill_text(text, width, indent)

    return Formatter


def _examples(prog: str, examples) -> str:
    lines = ["examples:"]
    for cmd, what in examples:
        lines += [f"  # {what}", f"  {cmd}"]
    lines.append("")
    lines.append("Global options (--root-dir, --cache, -v, -q ...): see `flyte-build --help`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # a no-op `build --json` is answered from a whole-build snapshot before
    # anything else is imported (see `snapshot`)
    from .stores.snapshot import replay

    code = replay(argv)
    if code is not None:
        return code
    import gc

    from .processes.children import hide_environ, on_signals

    hide_environ()  # the signing key in our environment is not for the user's modules to read
    # a build reads ~150,000 objects from its state (the stat cache, discovery's
    # entry): at the default threshold (700 allocations) the cyclic collector ran
    # ~215 times in a one-file edit's build at 5,000 files (0.06 s CPU); cycles are
    # still collected, ~40x less often (0.03 s). Restored for in-process callers.
    threshold = gc.get_threshold()
    gc.set_threshold(20_000, 10, 10)
    # SIGTERM and SIGINT end the children running user code first (their own
    # sessions: a signal to our group never reaches them)
    restore = on_signals()
    try:
        return _run(argv)
    finally:
        gc.set_threshold(*threshold)
        restore()


def _run(argv: list[str]) -> int:
    from .commands.common import emit_json_error, wants_json
    from .errors import FlyteBuildError

    p, modules = parser()
    if not argv:  # bare `flyte-build`: the help, with the exit status of a usage error (as `flyte`)
        p.print_help()
        return 2
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage error (or the help, or the version)
        if exc.code not in (0, None) and wants_json(argv):
            emit_json_error(_USAGE_ERRORS[-1] if _USAGE_ERRORS else "usage error", 2)
        raise
    args.argv = argv
    try:
        return modules[args.command].run(args)
    except FlyteBuildError as exc:
        sys.stderr.write(f"flyte-build: error: {exc}\n")
        if wants_json(argv):
            emit_json_error(str(exc), exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("flyte-build: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug of ours: say so, keep the traceback for FLYTE_BUILD_DEBUG
        if os.environ.get("FLYTE_BUILD_DEBUG"):
            raise
        sys.stderr.write(f"flyte-build: internal error: {type(exc).__name__}: {exc} (set FLYTE_BUILD_DEBUG=1 for the traceback)\n")
        if wants_json(argv):
            emit_json_error(f"internal error: {type(exc).__name__}: {exc}", 1)
        return 1


def run() -> None:
    argv = sys.argv[1:]
    # a no-op `build --json` is answered from its snapshot here: the resident
    # process, when there is one, says whether anything changed since it last
    # held (else this process stats what it recorded); any other command goes
    # to the thin client, and with a resident process it runs there and this
    # process imports nothing more (see flyte_build.daemon)
    from .daemon import client
    from .stores import snapshot

    loaded = snapshot.load(argv)
    code = None if loaded is None else client.replay(argv, loaded)
    if code is None:
        code = client.run(argv)
    sys.exit(main(argv) if code is None else code)


if __name__ == "__main__":
    run()
