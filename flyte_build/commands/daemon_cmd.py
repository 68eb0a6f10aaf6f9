"""`flyte-build daemon status|stop`: the repository's resident process."""

from __future__ import annotations

import os

from .common import emit_json

HELP = "show (status) or stop (stop) this repository's resident process"
EXAMPLES = (
    ("flyte-build daemon status", "its pid, uptime, commands served and memory, or that none runs"),
    ("flyte-build daemon stop", "stop it now (the next command starts a fresh one)"),
)


def add_parser(sub, parents):
    p = sub.add_parser("daemon", help=HELP, description=HELP, parents=parents)
    p.add_argument("action", choices=["status", "stop"], help="what to do")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def run(args) -> int:
    from ..daemon import control

    path = control.socket_for(args.argv)
    if args.action == "stop":
        pid = control.stop(path)
        if args.json:
            emit_json({"stopped": pid is not None, "pid": pid})
        else:
            print(f"stopped the resident process (pid {pid})" if pid else "no resident process runs for this repository")
        return 0
    status = control.ask(path, "status")
    if args.json:
        emit_json({"running": status is not None, "socket": path, **(status or {})})
    elif status is None:
        print(f"no resident process runs for this repository (it would listen on {path})")
    else:
        _print_status(status, path)
    return 0


def _print_status(s: dict, path: str) -> None:
    rss = f"{s['rss_kb'] / 1024:.0f} MB" if s.get("rss_kb") else "unknown"
    busy = f"running a command (pid {s['command']})" if s.get("command") else f"idle for {s['idle_for']:.1f} s"
    print(f"resident process: pid {s['pid']}, up {s['uptime']:.1f} s, {s['served']} commands served, {busy}")
    print(f"  exits after {s['idle_timeout']:g} s without a command; memory {rss}; {s['queued']} waiting")
    if s.get("warm_child"):
        print(f"  warm discovery child: pid {s['warm_child']}")
    w = s.get("watch") or {}
    if w.get("failed"):
        print(f"  not watching the repository ({w['failed']}): every no-op stats it")
    elif w:
        print(f"  watching {w['dirs']} directories; {w['noop_answers']} no-ops answered without a stat")
    print(f"  project {s['project']}; python {s['python']}; flyte-build {s['version']}")
    print(f"  socket {path}; log {os.path.splitext(path)[0]}.log")
