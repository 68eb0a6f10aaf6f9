"""`flyte-build build`: build targets (default `bundle:*`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import emit_json, json_text, verbosity, warn, workspace

HELP = "build targets (patterns like image:* or *:ml_training; default bundle:*)"
EXAMPLES = (
    ("flyte-build build", "every environment's code bundle (bundle:*)"),
    ("flyte-build build 'image:*' pex:ml_training", "every environment's image, and one PEX"),
    ("flyte-build build --changed-since origin/main --json", "only what changed, for CI"),
)


def add_parser(sub, parents):
    p = sub.add_parser("build", help=HELP, description=HELP, parents=parents)
    p.add_argument("targets", nargs="*", metavar="TARGET", help="a target or pattern: bundle:ENV, image:*, *:ENV (default bundle:*)")
    p.add_argument("--out", metavar="DIR", help="also copy the artifacts here, named by env and digest (DIR/bundle/<env>-<sha256>.tar.gz, DIR/pex/<env>-<sha256>.pex, ...), "
                   "with DIR/manifest.json listing this run's targets and their paths")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="actions run at once (default: config, else CPUs)")
    p.add_argument("--changed-since", metavar="REV", help="only the TARGETs (default bundle:*) affected since git revision REV (see `affected`)")
    return p


def run(args) -> int:
    if args.json:
        ws = workspace(args, jobs=args.jobs)
        reporter = None  # machines read stdout; rich is not even imported
    else:
        from ..progress import RichReporter, discovering

        with discovering(verbosity(args)):  # a cold discovery imports every module: seconds with nothing else to show
            ws = workspace(args, jobs=args.jobs)
        reporter = RichReporter(verbosity=verbosity(args))
    if verbosity(args) > 0 and ws.discovery.note:  # a warm discovery (the resident process) ran a cold child
        print(f"discovery: {ws.discovery.how}: {ws.discovery.note}", file=sys.stderr)
    targets = args.targets
    if getattr(args, "changed_since", None):
        from ..affected.targets import select_changed

        targets = select_changed(ws, args.changed_since, args.targets)
    out = Path(args.out).resolve() if args.out else None
    if targets or not getattr(args, "changed_since", None):
        results = ws.build(targets, reporter=reporter, out=out, jobs=args.jobs)
    else:
        results = []  # nothing affected: nothing to build (not the default set)
    failed = any(r.status == "failed" for r in results)
    manifest = _manifest(out, results) if out is not None else None
    if args.json:
        doc = {
            "targets": [r.record() for r in results],
            "warnings": ws.all_warnings(),
            "cache": ws.cache.stats_json(),
            "discovery": {"cached": ws.discovery.cached, "how": ws.discovery.how, "envs": [e.name for e in ws.ctx.envs]},
            "ok": not failed,
        }
        if manifest is not None:
            doc["manifest"] = str(manifest)
        emit_json(doc)
    else:
        from ..progress import print_summary

        print_summary(results, ws.all_warnings(), verbosity=verbosity(args))
        if any(r.outputs for r in results):
            print(_where(ws, out, manifest))
    if args.json:
        for w in ws.all_warnings():
            warn(w)
    if args.json and not failed and results and not ws.all_warnings() and all(ws.rules[r.kind].replayable for r in results):
        _snapshot(getattr(args, "argv", None), ws, results)
    return 1 if failed else 0


def _manifest(out: Path, results) -> Path | None:
    """`out/manifest.json`: the run's targets with artifacts, as the hatch target writes it.
    Written on every run, even with no artifacts, so an earlier run's manifest is
    never taken for this one's."""
    from ..hatch_plugin.output import manifest_record, write_manifest

    records = {r.target: manifest_record(r, out) for r in results if r.ok and r.path}
    return write_manifest(out, records)


def _where(ws, out: Path | None, manifest: Path | None) -> str:
    """The summary's last line: where the artifacts are."""
    if out is not None:
        return f"artifacts: {out}/<kind>/<env>-<sha256>.<ext>" + (f", listed in {manifest}" if manifest else "")
    return (f"artifacts: in the local cache, {ws.store.root / 'cas'} (by digest; --json gives each path, "
            "--out DIR copies them out with a manifest.json)")


def _snapshot(argv, ws, results) -> None:
    """Record what the same command would print next time if nothing changed
    (every target a local hit), with the paths that answer depends on."""
    from ..stores import snapshot

    if argv is None or not snapshot.eligible(argv):
        return
    if ws.cfg.storage:
        return  # bundle storage is checked (and refilled) on every run
    if any(list(e.include) or ws.cfg.include_for(e.name) for e in ws.ctx.envs):
        return  # include globs may match files in directories nothing below watches
    files, dirs = _snapshot_paths(ws, results)
    text = json_text(_snapshot_doc(ws, results))
    snapshot.record(argv, text, files, dirs)


def _snapshot_doc(ws, results) -> dict:
    """What the next run prints: this run's answer with every target a local hit."""
    from ..stores.two_tier_cache import CacheStats

    records = []
    for r in results:
        rec = r.record()
        rec.update(status="cached", cached=True, seconds=0.0, source="local")
        records.append(rec)
    return {
        "targets": records,
        "warnings": [],
        "cache": CacheStats(local_hits=len(results)).to_json(),
        "discovery": {"cached": True, "how": "snapshot", "envs": [e.name for e in ws.ctx.envs]},
        "ok": True,
    }


def _snapshot_paths(ws, results) -> tuple[set, set]:
    """(files whose stat signature, directories whose mtime the answer depends on)."""
    import os

    from ..discovery.reads import witness_path

    root = str(ws.cfg.root)
    files = _read_files(ws, results, root)
    dirs = {os.path.join(root, d) if d else root for d in ws.discovery.walked_dirs}
    dirs.update(ws.ctx.watched_dirs())
    if any(ws.cfg.copy_style_for(e.name) == "all" for e in ws.ctx.envs):
        # such a bundle holds every file under the root: watch every directory and ignore file
        from ..archives.bundle_files import walk

        walked: dict = {}
        fs = walk(ws.cfg.root, dir_mtimes=walked)
        dirs.update(os.path.join(root, d) if d else root for d in walked)
        files.update(os.path.join(root, f) for f in fs.ignore_files)
    # what the modules read at import (data files, listings, flyte's config): a file
    # that is missing now is watched through its nearest existing directory
    for p in ws.discovery.witness_paths:
        p = witness_path(p, root)
        if os.path.isfile(p):
            files.add(p)
            continue
        dirs.add(_nearest_dir(p))
    dirs.update(os.path.dirname(f) for f in files if f.startswith(root + os.sep))
    _watch_flyte_config(ws, files, dirs)
    # where the project's distributions are installed: an install or upgrade there renames an entry
    from ..config import interpreter

    dirs.update(interpreter.of(ws.cfg, ws.store.root).site)
    # from the working directory up to the root: a pyproject.toml added there would move the root
    d = os.getcwd()
    while True:
        dirs.add(d)
        if d == root or os.path.dirname(d) == d:
            break
        d = os.path.dirname(d)
    return files, dirs


def _read_files(ws, results, root: str) -> set:
    """The files the run digested, the config, flyte-build's own modules and the
    cache entries the answer names."""
    import os
    import sys

    from ..engine.rulesets import builtin_dir

    files = set(ws.digests.paths())
    if ws.cfg.pyproject is not None:
        files.add(str(ws.cfg.pyproject))
    # flyte-build's own modules and the rules it loaded: an upgrade or an edit of a rule changes the answer
    own = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep, str(builtin_dir()) + os.sep, root + os.sep)
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if f and f.startswith(own):
            files.add(f)
    for r in results:
        for o in r.outputs:
            files.add(str(ws.store.blob_path(o.digest)))
        if r.key:
            files.add(str(ws.store.action_path(r.key)))
    return files


def _nearest_dir(p: str) -> str:
    """`p` if it is a directory, else its nearest existing parent (whose mtime tells when it appears)."""
    import os

    while not os.path.isdir(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    return p


def _watch_flyte_config(ws, files: set, dirs: set) -> None:
    """flyte's config file is in discovery's key: the one in use, and every place
    flyte looks first, where a new file would take its place."""
    import os

    from ..flyte_config import _candidates

    if getattr(ws.cfg, "flyte_config", None) and os.path.isfile(ws.cfg.flyte_config):
        files.add(str(ws.cfg.flyte_config))
    for _, path, _ in _candidates(Path.cwd(), os.environ):
        if path is not None:
            # a directory yet to be made: its parent's mtime tells
            dirs.add(_nearest_dir(str(path.parent if path.is_absolute() else Path.cwd() / path.parent)))
