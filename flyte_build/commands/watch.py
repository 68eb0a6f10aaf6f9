"""`flyte-build watch [TARGET ...]`: rebuild on save."""

from __future__ import annotations

HELP = "build, then rebuild after every save, saying which files changed (Ctrl-C stops)"
EXAMPLES = (
    ("flyte-build watch", "every bundle, again after each burst of saves"),
    ("flyte-build watch 'bundle:ml_*' --debounce 500", "some bundles; saves within 0.5 s are one round"),
)


def add_parser(sub, parents):
    p = sub.add_parser("watch", help=HELP, description=HELP, parents=parents)
    p.add_argument("targets", nargs="*", metavar="TARGET", help="targets or patterns, as for build (default: bundle:*)")
    p.add_argument("--debounce", type=int, default=300, metavar="MS",
                   help="saves within this many milliseconds of each other start one round (default 300)")
    p.add_argument("--out", metavar="DIR", help="as build --out (not watched)")
    p.add_argument("--jobs", "-j", type=int, help="as build --jobs")
    return p


def run(args) -> int:
    import os

    from ..config import settings as config
    from ..daemon import watch
    from ..errors import UserError
    from ..stores.cache_dir import default_cache_path

    try:
        import watchfiles  # noqa: F401
    except ImportError:
        raise UserError("watch needs the watchfiles package: pip install watchfiles") from None
    if args.debounce < 0:
        raise UserError("--debounce must be a number of milliseconds >= 0")
    cfg = config.load(args.root_dir, require_project=True)
    roots = [str(cfg.root)]
    if cfg.pyproject and cfg.root not in cfg.pyproject.parents:  # a pyproject.toml above the root
        roots.append(str(cfg.pyproject))
    ignore = [args.cache_dir or default_cache_path(), str(cfg.root / cfg.directory)]
    if args.out:
        ignore.append(os.path.abspath(args.out))
    return watch.loop(args.argv, roots, ignore, args.debounce)
