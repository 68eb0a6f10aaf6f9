"""`flyte-build cache stats|verify|gc`: inspect, check and trim the stores."""

from __future__ import annotations

import os
from pathlib import Path

from .common import emit_json

HELP = "inspect (stats), check (verify) and trim (gc) the cache; make a signing key pair (keygen)"
EXAMPLES = (
    ("flyte-build cache stats", "the local cache's size and the last run's hits"),
    ("flyte-build cache verify", "check every blob against its digest (exit 1 on a problem)"),
    ("flyte-build cache gc --max-age-days 30", "drop entries unused for 30 days"),
)
NAME = "cache"


def add_parser(sub, parents):
    p = sub.add_parser("cache", help=HELP, description=HELP, parents=parents)
    p.add_argument("action", choices=["stats", "verify", "gc", "keygen"], help="what to do")
    p.add_argument("--max-age-days", type=_days, help="gc: also drop entries unused for this long (waits for running builds)")
    p.add_argument("--wait", type=float, default=600.0, metavar="SECONDS", help="gc --max-age-days: how long to wait for running builds (default 600)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def _days(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days >= 0")
    return value


def run(args) -> int:
    from ..stores.local_store import LocalStore

    if args.action == "keygen":
        return _keygen(args)
    store = LocalStore(Path(args.cache_dir) if getattr(args, "cache_dir", None) else None)
    return ACTIONS[args.action](store, args)


def _keygen(args) -> int:
    from ..stores.signing import SIGNING_KEY_ENV, keygen

    private, public = keygen()
    if args.json:
        emit_json({"signing_key": private, "verify_key": public})
    else:
        print(f"signing key (secret: CI only, as ${SIGNING_KEY_ENV}): {private}")
        print(f"verify key (public: cache-verify-keys in pyproject.toml): {public}")
    return 0


def _stats(store, args) -> int:
    from ..stores import maintenance

    last_run = store.read_json("state/last-run.json")
    doc = {"local": maintenance.stats(store), "last_run": last_run if isinstance(last_run, dict) else None}
    if args.json:
        emit_json(doc)
        return 0
    loc = doc["local"]
    print(f"local cache {loc['path']}: {loc['blobs']} blobs ({loc['blob_bytes']} bytes), {loc['actions']} actions")
    if doc["last_run"]:
        _print_last_run(doc["last_run"])
    return 0


def _print_last_run(lr: dict) -> None:
    print(
        f"last run: {lr.get('built', 0)} built, {lr.get('cached', 0)} cached; "
        f"hits local {lr.get('local_hits', 0)}, shared {lr.get('shared_hits', 0)}, misses {lr.get('misses', 0)}; "
        f"bytes down {lr.get('bytes_down', 0)}, up {lr.get('bytes_up', 0)}"
    )
    if lr.get("shared"):
        print(
            f"shared cache {lr['shared']}: {lr.get('shared_hits', 0)} hits, {lr.get('misses', 0)} misses, "
            f"{lr.get('bytes_down', 0)} bytes down, {lr.get('bytes_up', 0)} bytes up, "
            f"{lr.get('corrupt', 0)} corrupt objects refused"
        )
    remote = lr.get("remote")
    if isinstance(remote, dict) and isinstance(remote.get("calls"), dict):
        calls = ", ".join(f"{k} {v}" for k, v in remote["calls"].items())
        moved = remote.get("bytestream_bytes") or {}
        print(f"  {remote.get('protocol', 'remote')} calls: {calls or 'none'}; "
              f"ByteStream bytes read {moved.get('read', 0)}, written {moved.get('written', 0)}")
    st = lr.get("storage")
    if st:
        print(f"bundle storage {st['url']}: {st['uploads']} uploaded ({st['bytes_up']} bytes), {st['present']} already there")
    for w in lr.get("warnings") or []:
        print(f"warning: {w}")


def _verify(store, args) -> int:
    from ..stores import maintenance

    problems = maintenance.verify(store)
    if args.json:
        emit_json({"ok": not problems, "problems": problems, "local": maintenance.stats(store)})
    else:
        for p in problems:
            print(f"problem: {p}")
        print("cache verify: ok" if not problems else f"cache verify: {len(problems)} problems (run `flyte-build cache gc` to drop them)")
    return 0 if not problems else 1


def _gc(store, args) -> int:
    from ..stores import maintenance

    lock = None
    if args.max_age_days is not None:
        import sys

        lock = store.exclusive(args.wait, lambda: print("cache gc: waiting for running builds on this cache...", file=sys.stderr))
        if lock is None:
            from ..errors import BuildFailed

            raise BuildFailed(f"cache gc: builds kept the cache busy for {args.wait:g} s; nothing removed (try again, or --wait longer)")
    try:
        removed = maintenance.gc(store, max_age_days=args.max_age_days)
    finally:
        if lock is not None:
            os.close(lock)
    if args.json:
        emit_json({"removed": removed})
    else:
        print(f"cache gc: removed {removed['actions']} action entries, {removed['blobs']} blobs ({removed['bytes']} bytes), "
              f"{removed['tmp']} temporary files, {removed['documents']} unused discovery results and state files")
    return 0


# the actions on the local store (keygen needs none)
ACTIONS = {"stats": _stats, "verify": _verify, "gc": _gc}
