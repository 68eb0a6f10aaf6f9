"""What a person sees while targets build: a rich progress display on stderr
in a terminal; elsewhere (a CI log) a line when a target starts, a heartbeat
while one runs long, and a line when it ends; then the summary table, sized
to the terminal.

Verbosity: -1 (`-q`) prints no progress, only the summary and errors; 0 the
above; 1 (`-v`) also every log line of a running target (outside a terminal)
and failures in full rather than their first line."""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

from rich.markup import escape  # build logs and errors hold `[...]`, which is not markup

from .engine.executor import Reporter, TargetResult

# seconds between two "still running" lines outside a terminal (an image build
# can be silent for minutes while a layer installs); None: $FLYTE_BUILD_HEARTBEAT
HEARTBEAT_SECONDS: float | None = None


def heartbeat_seconds() -> float:
    """Read per run, never at import: the resident process imports this module
    before any command's environment exists."""
    if HEARTBEAT_SECONDS is not None:
        return HEARTBEAT_SECONDS
    try:
        value = float(os.environ.get("FLYTE_BUILD_HEARTBEAT") or 30)
    except ValueError:
        return 30.0
    return value if value > 0 else 30.0


DISCOVERING = "discovering environments (importing your modules)"


@contextmanager
def discovering(verbosity: int = 0, after: float = 2.0):
    """While discovery runs: a spinner in a terminal; elsewhere one line, only
    when it takes longer than `after` seconds (a cached discovery takes ms)."""
    if verbosity < 0:
        yield
        return
    from rich.console import Console

    console = Console(stderr=True, emoji=False)
    if console.is_terminal:
        with console.status(DISCOVERING + "..."):
            yield
        return
    timer = threading.Timer(after, lambda: console.print(f"  {DISCOVERING}...", highlight=False, markup=False))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def result_word(r: TargetResult) -> str:
    """What happened to the target, in the summary's words (the JSON keeps `status`)."""
    if r.ok and r.kind == "image" and not r.outputs:
        return "referenced"  # an image used as it is: nothing was built
    if r.status == "cached" and r.meta.get("waited_for"):
        return "waited"  # the same action as another target of this run, run once
    return r.status


def first_line(error: str | None) -> str:
    lines = [ln for ln in (error or "").splitlines() if ln.strip()]
    return lines[0].strip() if lines else ""


def failure_text(r: TargetResult, verbose: bool) -> str:
    """One line naming what failed and why, plus the full log's path; `-v`: the error in full."""
    text = (r.error or "").rstrip() if verbose else first_line(r.error)
    text = text.removeprefix(f"{r.target}: ")  # the line names the target already
    log = r.meta.get("log")
    return f"{text} (full log: {log})" if log else text


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class RichReporter(Reporter):
    def __init__(self, quiet: bool = False, verbosity: int = 0):
        from rich.console import Console

        self.console = Console(stderr=True, emoji=False)
        self.verbosity = -1 if quiet else verbosity
        self._progress = None
        self._tasks: dict[str, int] = {}
        self._running: dict[str, tuple[float, str]] = {}  # outside a terminal: target -> (start, last log line)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._beat: threading.Thread | None = None

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0

    def _line(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True, markup=False)

    def start(self, targets: list[str]) -> None:
        if self.quiet:
            return
        if not self.console.is_terminal:
            self._beat = threading.Thread(target=self._heartbeat, name="flyte-build-heartbeat", daemon=True)
            self._beat.start()
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=True,
        )
        self._progress.start()
        self._overall = self._progress.add_task("building", total=len(targets))

    def begin(self, target: str) -> None:
        if self._progress is not None:
            with self._lock:
                self._tasks[target] = self._progress.add_task(target, total=None)
        elif not self.quiet:
            with self._lock:
                self._running[target] = (time.monotonic(), "")
            self._line(f"  start {target}")

    def log(self, target: str, line: str) -> None:
        if self._progress is not None:
            with self._lock:
                tid = self._tasks.get(target)
                if tid is not None:
                    self._progress.update(tid, description=f"{target}  [dim]{escape(line.strip()[-60:])}[/]")
            return
        with self._lock:
            if target in self._running:
                self._running[target] = (self._running[target][0], line.strip())
        if self.verbosity > 0:
            self._line(f"{target} | {line.rstrip()}")

    def _heartbeat(self) -> None:
        every = heartbeat_seconds()
        while not self._stopped.wait(every):
            now = time.monotonic()
            with self._lock:
                long_ones = [(t, now - s, last) for t, (s, last) in self._running.items() if now - s >= every]
            for target, seconds, last in long_ones:
                self._line(f"  still running {target} ({_elapsed(seconds)})" + (f": {last[-100:]}" if last else ""))

    def finish(self, result: TargetResult) -> None:
        if self._progress is not None:
            with self._lock:
                tid = self._tasks.pop(result.target, None)
                if tid is not None:
                    self._progress.remove_task(tid)
                self._progress.advance(self._overall)
            return
        with self._lock:
            self._running.pop(result.target, None)
        if self.quiet:
            return
        if result.status == "failed":  # the summary adds the log's path
            detail = (result.error or "").rstrip() if self.verbosity > 0 else first_line(result.error)
        elif result.status == "skipped":
            detail = result.error or ""
        else:
            detail = f"{result.digest or ''} ({result.seconds:.1f}s)"
        self._line(f"{result_word(result):>7} {result.target} {detail}".rstrip())

    def stop(self) -> None:
        self._stopped.set()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def summary_table(results: list[TargetResult], title: str = "flyte-build"):
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    # the target wraps if it must; a digest is cut (its start names it), never wrapped
    table.add_column("target", overflow="fold")
    table.add_column("digest", no_wrap=True, overflow="ellipsis", max_width=20, min_width=8)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    styles = {"built": "green", "cached": "cyan", "waited": "cyan", "referenced": "blue", "failed": "bold red", "skipped": "yellow"}
    for r in results:
        word = result_word(r)
        size = r.meta.get("image_size") if r.kind == "image" else r.size  # an image's own size, not its build context's
        table.add_row(r.target, r.digest or "-", human_size(size), f"[{styles.get(word, '')}]{word}[/]", f"{r.seconds:.2f}s")
    return table


def count_line(results: list[TargetResult]) -> str:
    """"6 targets: 6 built, 0 cached, 0 failed, 0 skipped", then any other outcome."""
    words = [result_word(r) for r in results]
    n = len(results)
    parts = [f"{words.count(w)} {w}" for w in ("built", "cached", "failed", "skipped")]
    parts += [f"{words.count(w)} {w}" for w in ("referenced", "waited") if w in words]
    return f"{n} target{'' if n == 1 else 's'}: {', '.join(parts)}"


def notes(results: list[TargetResult]) -> list[str]:
    """Why a row is not plainly built or cached."""
    out = []
    for r in results:
        if r.status == "skipped":
            out.append(f"skipped {r.target}: {r.error or 'not run'}")
        elif result_word(r) == "waited":
            out.append(f"waited {r.target}: the same action as {r.meta['waited_for']}, run once for both")
    return out


def print_summary(results: list[TargetResult], warnings: list[str], title: str = "flyte-build", verbosity: int = 0) -> None:
    from rich.console import Console

    out = Console(file=sys.stdout, emoji=False)
    out.print(summary_table(results, title))
    out.print(count_line(results), highlight=False)
    for line in notes(results):
        out.print(line, highlight=False, markup=False)
    err = Console(stderr=True, emoji=False)
    for r in results:
        if r.status == "failed":
            err.print(f"[bold red]failed[/] {r.target}: {escape(failure_text(r, verbosity > 0))}", highlight=False, soft_wrap=True)
    for w in warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
