"""The `flyte-build` command. Exit status: 0 success, 1 a build or deploy failed, 2 bad input or usage."""

from __future__ import annotations

import os
import sys

from .__about__ import __version__


def parser():
    import argparse
    import importlib

    from . import rulesets
    from .commands import COMMANDS
    from .commands.common import global_options

    p = argparse.ArgumentParser(prog="flyte-build", description="A build system for Flyte v2 projects: bundles, images, PEX files and ordered deploys.")
    p.add_argument("--version", action="version", version=f"flyte-build {__version__}")
    global_options(p, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    global_options(common, suppress=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = {}
    ordered = [importlib.import_module(f".commands.{name}", __package__) for name in COMMANDS]
    for mod in rulesets.commands():  # placed after the command they name, for the help's order
        after = [m.__name__.rsplit(".", 1)[-1] for m in ordered].index(getattr(mod, "AFTER", COMMANDS[-1])) + 1
        ordered.insert(after, mod)
    for mod in ordered:
        sp = mod.add_parser(sub, [common])
        modules[sp.prog.split()[-1]] = mod
    return p, modules


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # a no-op `build --json` is answered from a whole-build snapshot before
    # anything else is imported (see `snapshot`)
    from .snapshot import replay

    code = replay(argv)
    if code is not None:
        return code
    import gc

    # a build reads ~150,000 objects from its state (the stat cache, discovery's
    # entry): at the default threshold (700 allocations) the cyclic collector ran
    # ~215 times in a one-file edit's build at 5,000 files (0.06 s CPU); cycles are
    # still collected, ~40x less often (0.03 s). Restored for in-process callers.
    threshold = gc.get_threshold()
    gc.set_threshold(20_000, 10, 10)
    try:
        return _run(argv)
    finally:
        gc.set_threshold(*threshold)


def _run(argv: list[str]) -> int:
    from .errors import FlyteBuildError

    p, modules = parser()
    args = p.parse_args(argv)
    args.argv = argv
    try:
        return modules[args.command].run(args)
    except FlyteBuildError as exc:
        sys.stderr.write(f"flyte-build: error: {exc}\n")
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
        return 1


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
