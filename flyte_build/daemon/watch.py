"""`flyte-build watch`: build, then build again after every burst of saves.

Each round says which files changed, then runs the same command line as
`build` would (in the resident process when there is one, else in a new
process), whose own output says which targets were rebuilt and how many
came from the cache. Saves made while a build runs are kept by the watcher
and start the next round. Ctrl-C ends the running build the way it ends a
`build` (nothing half-written) and then the watch, with exit status 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from . import client

SHOWN = 5  # changed files named per round; the rest are counted


def build_argv(argv: list[str], debounce_flag: str = "--debounce") -> list[str]:
    """`argv` of a watch command turned into the build it repeats."""
    out, skip = [], False
    replaced = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == debounce_flag:
            skip = True
            continue
        if a.startswith(debounce_flag + "="):
            continue
        if a == "watch" and not replaced:
            out.append("build")
            replaced = True
            continue
        out.append(a)
    return out


def describe(changes, roots: list[str]) -> str:
    """'changed: a.py (modified), b/c.py (added) and 3 more'"""
    from watchfiles import Change

    words = {Change.added: "added", Change.modified: "modified", Change.deleted: "deleted"}
    named = []
    for change, path in sorted(changes, key=lambda c: c[1]):
        rel = next((os.path.relpath(path, r) for r in roots if path.startswith(r.rstrip(os.sep) + os.sep)), path)
        named.append(f"{rel} ({words.get(change, 'changed')})")
    more = f" and {len(named) - SHOWN} more" if len(named) > SHOWN else ""
    return "changed: " + ", ".join(named[:SHOWN]) + more


def loop(argv: list[str], roots: list[str], ignore: list[str], debounce_ms: int) -> int:
    import watchfiles

    build = build_argv(argv)
    say = client.say
    watch_filter = watchfiles.DefaultFilter(ignore_paths=[os.path.abspath(p) for p in ignore])
    # an empty batch every half second: the first says the watcher is up, so the
    # first build and every save from then on are seen
    batches = watchfiles.watch(*roots, watch_filter=watch_filter, debounce=max(debounce_ms, 1),
                               step=min(50, max(debounce_ms, 1)), rust_timeout=500, yield_on_timeout=True,
                               raise_interrupt=True)
    try:
        next(batches)
        code = _round(build)
        say(f"watching {', '.join(roots)} (Ctrl-C to stop)")
        for changes in batches:
            if not changes:
                continue
            say(describe(changes, roots) + f"; running `flyte-build {' '.join(build)}`")
            code = _round(build)
            if code == 130:  # the build was interrupted: so is the watch
                break
            say(f"waiting for changes (the last build exited {code}; Ctrl-C to stop)")
    except KeyboardInterrupt:
        pass
    finally:
        batches.close()
    say("stopped watching")
    return 0


def _round(build: list[str]) -> int:
    start = time.monotonic()
    code = client.run(build)
    if code is None:
        code = _in_new_process(build)
    client.say(f"build exited {code} in {time.monotonic() - start:.2f} s")
    return code


def _in_new_process(build: list[str]) -> int:
    """The build in a process of its own: nothing an earlier round memoised
    (digests, parsed config) outlives the round."""
    proc = subprocess.Popen([*client.own_python("flyte_build.cli"), "--no-daemon", *build])
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # ours alone (a terminal's Ctrl-C reaches the build too)
            proc.send_signal(signal.SIGINT)
