"""The resident-process scenarios of `bench.run`: a no-op and a one-file edit
served by flyte-build's resident process (its thin client is the measured
process), and the resident process's own peak RSS.

The resident process is off with `$CI` set, so these runs drop `CI` from the
environment; every other scenario runs with `--no-daemon` when the resident
process exists, so its rows stay the figures of a process that starts cold.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

NOOP = "no-op rebuild, resident process"
EDIT = "edit 1 service file, resident process"
ROWS = (NOOP, EDIT)


def available() -> bool:
    """Whether this flyte-build has a resident process (`flyte-build daemon`)."""
    r = subprocess.run([sys.executable, "-m", "flyte_build", "daemon", "--help"], capture_output=True)
    return r.returncode == 0


def no_daemon_flag() -> list[str]:
    """`--no-daemon` where the resident process exists (a command then runs in its own process)."""
    return ["--no-daemon"] if available() else []


def _environ(env: dict) -> dict:
    # FLYTE_BUILD_DAEMON=0 (the test suite's setting, e.g. under test_bench_smoke) would keep it off too
    return {k: v for k, v in env.items() if k not in ("CI", "FLYTE_BUILD_DAEMON")}


def _daemon(args: list[str], repo: Path, env: dict, cli: list[str]) -> subprocess.CompletedProcess:
    """`flyte-build daemon ARGS` by the same flyte-build and Python as the
    measured client (another one has a resident process of its own)."""
    return subprocess.run([*cli, "daemon", *args], cwd=repo, env=_environ(env), capture_output=True, text=True, timeout=120)


def _status(repo: Path, env: dict, cli: list[str]) -> dict:
    try:
        return json.loads(_daemon(["status", "--json"], repo, env, cli).stdout)
    except ValueError:
        return {}


def peak_rss_mb(status: dict) -> float | None:
    """The resident process's peak RSS (VmHWM) with its living descendants' and
    the warm discovery child's (it holds flyte and the user's modules; a command
    started it, so it is no descendant of the resident process once that command
    ended), from `daemon status --json`: each one's own peak, summed (an upper bound)."""
    try:
        pid = int(status["pid"])
    except (KeyError, TypeError, ValueError):
        return None
    warm = status.get("warm_child")
    total = 0
    for p in {*_with_descendants(pid), *(_with_descendants(int(warm)) if warm else ())}:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024 if total else None


def _with_descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return out


def code_edit(path: Path, n: int) -> None:
    """An edit that changes code (a new function in the module), as a user's does:
    discovery cannot cut it off as a comment, so the warm child runs the module
    and its importers again."""
    with open(path, "a") as f:
        f.write(f"\n\ndef bench_edit_{n}(x: float) -> float:\n    return x * {n}\n")


def _await_warm_child(repo: Path, env: dict, cli: list[str], timeout: float = 300) -> None:
    """Until `daemon status` names the warm discovery child (a user's first edit
    comes seconds after the first command; the bench's would come at once)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _status(repo, env, cli).get("warm_child"):
        time.sleep(0.5)


def run(repo: Path, env: dict, cli: list[str], edit, samples: dict, measure, counts) -> None:
    """One repetition of the resident rows on a clean tree whose cache is warm:
    start the resident process (unmeasured) and let its warm discovery child
    start, then a no-op and an edit of `edit` (a function that edits the service
    file: `code_edit`), each through the thin client (`cli` + build --json); the
    edit row says how discovery answered ("warm": a fork of the warm child). The
    resident process is stopped at the end (its cache is removed next)."""
    renv = _environ(env)
    fb = [*cli, "build", "--json"]
    try:
        measure(fb, repo, renv)  # starts it; it discovers and keys the tree
        _await_warm_child(repo, env, cli)  # the cache answered that discovery: the warm child starts meanwhile
        time.sleep(2.1)  # past the stat cache's racy window, as the cold rows
        # the first no-ops stat the tree: the first sets the watches beyond the
        # tree (the cache's, flyte-build's files), the second is the first they cover
        for _ in range(3):
            measure(fb, repo, renv)
        before = _status(repo, env, cli)
        s, text = measure(fb, repo, renv)
        after = _status(repo, env, cli)
        samples[NOOP].append(s.with_info({**counts(json.loads(text)), **_resident_info(before, after)}))
        edit()
        s, text = measure(fb, repo, renv)
        after_edit = _status(repo, env, cli)
        doc = json.loads(text)
        samples[EDIT].append(s.with_info({**counts(doc), "how": doc["discovery"]["how"], **_resident_info(None, after_edit)}))
    finally:
        _daemon(["stop"], repo, env, cli)


def _resident_info(before: dict | None, after: dict) -> dict:
    """The resident process's peak RSS and, for a no-op (`before` given),
    whether it was answered from the watch (no tree stat)."""
    info: dict = {}
    rss = peak_rss_mb(after)
    if rss:
        info["resident_rss_mb"] = rss
    answered = lambda st: (st.get("watch") or {}).get("noop_answers")
    if before is not None and answered(after) is not None and answered(before) is not None:
        info["watch_answered"] = answered(after) > answered(before)
    return info
