"""What a person sees while targets build: a rich progress display on stderr,
one line per finished target when stderr is not a terminal, and the summary
table at the end."""

from __future__ import annotations

import sys
import threading

from rich.markup import escape  # build logs and errors hold `[...]`, which is not markup

from .engine import Reporter, TargetResult


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class RichReporter(Reporter):
    def __init__(self, quiet: bool = False):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet = quiet
        self._progress = None
        self._tasks: dict[str, int] = {}
        self._lock = threading.Lock()

    def start(self, targets: list[str]) -> None:
        if self.quiet or not self.console.is_terminal:
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

    def log(self, target: str, line: str) -> None:
        if self._progress is not None:
            with self._lock:
                tid = self._tasks.get(target)
                if tid is not None:
                    self._progress.update(tid, description=f"{target}  [dim]{escape(line.strip()[-60:])}[/]")

    def finish(self, result: TargetResult) -> None:
        if self._progress is not None:
            with self._lock:
                tid = self._tasks.pop(result.target, None)
                if tid is not None:
                    self._progress.remove_task(tid)
                self._progress.advance(self._overall)
        elif not self.quiet:
            detail = result.digest or result.error or ""
            self.console.print(f"{result.status:>7} {result.target} {escape(detail)}", highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def summary_table(results: list[TargetResult], title: str = "flyte-build"):
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in ("target", "digest", "size", "result", "time"):
        table.add_column(col, justify="right" if col in ("size", "time") else "left", no_wrap=col != "target")
    styles = {"built": "green", "cached": "cyan", "failed": "bold red", "skipped": "yellow"}
    for r in results:
        digest = (r.digest or "-")[:19]
        table.add_row(
            r.target, digest, human_size(r.size), f"[{styles.get(r.status, '')}]{r.status}[/]", f"{r.seconds:.2f}s"
        )
    return table


def print_summary(results: list[TargetResult], warnings: list[str], title: str = "flyte-build") -> None:
    from rich.console import Console

    out = Console(file=sys.stdout, width=max(100, Console().width))
    out.print(summary_table(results, title))
    built = sum(r.status == "built" for r in results)
    cached = sum(r.status == "cached" for r in results)
    failed = [r for r in results if r.status == "failed"]
    skipped = sum(r.status == "skipped" for r in results)
    out.print(f"{len(results)} targets: {built} built, {cached} cached, {len(failed)} failed, {skipped} skipped", highlight=False)
    err = Console(stderr=True)
    for r in failed:
        err.print(f"[bold red]failed[/] {r.target}: {escape(r.error or '')}", highlight=False)
    for w in warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
