"""What the builder and the build hook share: running targets through the
CLI's engine and cache, copying the artifacts out, and the manifest.

`manifest.json` holds one record per target in the shape of
`flyte-build build --json`, minus the fields that describe the run rather than
the artifact (`cached`, `status`, `seconds`, `source`), and with `path`
relative to the manifest's directory. So an unchanged tree writes the same
manifest bytes on every machine and run, and the copy a wheel carries can be
compared byte for byte with the one beside the artifacts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from .. import atomic
from ..__about__ import __version__
from ..config.settings import Config
from ..engine.executor import Reporter, TargetResult
from ..errors import BuildFailed
from ..workspace import Settings, Workspace

MANIFEST = "manifest.json"
PLAN = "plan.json"
RUN_FIELDS = ("cached", "status", "seconds", "source")


class LineReporter(Reporter):
    """One line per finished target, through hatch's display (no live progress:
    hatch runs us in a subprocess whose output it relays line by line)."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def finish(self, result: TargetResult) -> None:
        self.say(f"{result.status:>7} {result.target} {result.digest or result.error or ''}".rstrip())


def workspace(cfg: Config, warn: Callable[[str], None]) -> Workspace:
    # The local cache comes from $FLYTE_BUILD_CACHE_DIR etc., exactly as for
    # the CLI, so hatch and `flyte-build build` hit each other's entries.
    # The user's modules are imported by the project's interpreter, not hatch's build environment's.
    from ..config.interpreter import for_hatch

    return Workspace(Settings(), cfg=for_hatch(cfg), warn=warn)


def build(ws: Workspace, patterns: list[str], directory: Path, say: Callable[[str], None]) -> list[TargetResult]:
    """Build `patterns`, copy the artifacts under `directory`, say what happened;
    raises BuildFailed (after saying why) when a target failed."""
    results = ws.build(patterns, reporter=LineReporter(say), out=directory)
    say(summary(results))
    for w in ws.all_warnings():
        say(f"warning: {w}")
    failed = [r for r in results if r.status == "failed"]
    if failed:
        # each failure's log was already shown by the reporter; name them once more
        raise BuildFailed(f"{len(failed)} target(s) failed: {', '.join(r.target for r in failed)}")
    return results


def summary(results: list[TargetResult]) -> str:
    n = {s: sum(r.status == s for r in results) for s in ("built", "cached", "failed", "skipped")}
    line = f"{len(results)} target{'' if len(results) == 1 else 's'}: {n['built']} built, {n['cached']} cached, {n['failed']} failed, {n['skipped']} skipped"
    if results and n["cached"] == len(results):
        line += " (all cache hits)"
    return line


def manifest_record(result: TargetResult, directory: Path) -> dict:
    rec = {k: v for k, v in result.record().items() if k not in RUN_FIELDS}
    if result.path:
        rec["path"] = Path(os.path.relpath(result.path, directory)).as_posix()
    return rec


def write_manifest(directory: Path, records: dict[str, dict]) -> Path:
    doc = {
        "generator": f"flyte-build {__version__}",
        "targets": [records[t] for t in sorted(records)],
    }
    path = directory / MANIFEST
    atomic.write_bytes(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return path


def write_json(path: Path, doc) -> Path:
    atomic.write_bytes(path, (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode())
    return path


def clean(directory: Path, kinds: set[str]) -> list[Path]:
    """Remove what a build wrote under `directory`: the manifest's files, the
    per-kind folders, manifest.json and plan.json; then any folder left empty.
    Files we did not write stay."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    # .tmp-* are atomic writes a killed build left behind
    victims: set[Path] = {directory / MANIFEST, directory / PLAN, *directory.glob(atomic.TMP_PREFIX + "*")}
    try:
        doc = json.loads((directory / MANIFEST).read_text())
        for rec in doc.get("targets", []):
            kinds.add(rec.get("kind", ""))
            if rec.get("path"):
                victims.add(directory / rec["path"])
    except (OSError, ValueError):
        pass
    for kind in filter(None, kinds):
        sub = directory / kind
        if sub.is_dir():
            victims.update(p for p in sub.rglob("*") if p.is_file() or p.is_symlink())
    for p in sorted(victims):
        if p.is_file() or p.is_symlink():
            p.unlink()
            removed.append(p)
    for d in sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    if not any(directory.iterdir()):
        directory.rmdir()
    return removed
