"""Every shell example of BUILD.md runs, or says why it cannot run here.

The examples are collected by their code fences (```bash, ```sh, ```shell,
```console), wherever they sit in the guide, so sections can move freely.
A comment on the line above a fence (blank lines between are allowed) says
how to treat it:

    <!-- example: skip: REASON -->       not run here; REASON says why (and what runs it instead)
    <!-- example: run; OPTION; ... -->    run with options (a fence with no comment is run as is)

Options: `cwd=DIR` (relative to the repository copy; default its top, where
`sample_monorepo/` is), `exit=N` (default 0), `expect=TEXT` (must appear in
the output; repeatable), `free-port=N` (N in the example is replaced by a free
port, so runs in parallel never meet), `daemon=on` (the resident process is
used, as on a laptop: the suite turns it off elsewhere; such an example ends
with `flyte-build daemon stop`). A ```console example runs its `$ `
lines; the others run whole, under `bash -e`. Each runs in a fresh temp copy
of `sample_monorepo/` with a private cache, the real `flyte-build` of this
interpreter first on PATH, and outside CI (as on a laptop).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.cli import copy_sample

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "BUILD.md"
SHELLS = ("bash", "sh", "shell", "console")
FENCE = re.compile(r"^```(\w*)\s*$")
MARK = re.compile(r"^<!--\s*example:\s*(.*?)\s*-->$")


@dataclass(frozen=True)
class Example:
    line: int  # of the opening fence
    lang: str
    body: str
    mark: str | None  # the comment's text after "example:", None without one
    options: dict = field(default_factory=dict)
    expects: tuple[str, ...] = ()

    @property
    def skip_reason(self) -> str | None:
        return self.mark[len("skip:"):].strip() if self.mark and self.mark.startswith("skip:") else None

    def script(self) -> str:
        if self.lang != "console":
            return self.body
        return "\n".join(line[2:] for line in self.body.splitlines() if line.startswith("$ "))

    def name(self) -> str:
        first = next((x for x in self.script().splitlines() if x.strip() and not x.startswith("#")), "")
        return re.sub(r"[^A-Za-z0-9_.:*-]+", "-", first.strip())[:60]


def parse_mark(mark: str | None) -> tuple[dict, tuple[str, ...]]:
    if mark is None or mark.startswith("skip:"):
        return {}, ()
    parts = [p.strip() for p in mark.split(";")]
    assert parts[0] == "run", f"unknown example comment {mark!r}: expected 'skip: REASON' or 'run; ...'"
    options, expects = {}, []
    for p in parts[1:]:
        key, _, value = p.partition("=")
        assert key in ("cwd", "exit", "expect", "free-port", "daemon") and value, f"bad example option {p!r} in {mark!r}"
        if key == "expect":
            expects.append(value)
        else:
            options[key] = value
    return options, tuple(expects)


def collect(text: str) -> tuple[list[Example], list[int]]:
    """(the shell examples, the lines of example comments that precede no shell fence)."""
    lines = text.splitlines()
    found: list[Example] = []
    orphans: list[int] = []
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i].strip())
        if m:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            fence = FENCE.match(lines[j]) if j < len(lines) else None
            if not (fence and fence.group(1) in SHELLS):
                orphans.append(i + 1)
        fence = FENCE.match(lines[i])
        if fence and fence.group(1):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if fence.group(1) in SHELLS:
                k = i - 1
                while k >= 0 and not lines[k].strip():
                    k -= 1
                mark = MARK.match(lines[k].strip()) if k >= 0 else None
                text_mark = mark.group(1) if mark else None
                options, expects = parse_mark(text_mark)
                found.append(Example(i + 1, fence.group(1), "\n".join(lines[i + 1:j]) + "\n", text_mark, options, expects))
            i = j + 1
            continue
        i += 1
    return found, orphans


EXAMPLES, ORPHANS = collect(GUIDE.read_text())
RUNNABLE = [e for e in EXAMPLES if e.skip_reason is None]


def test_every_shell_example_is_run_or_says_why_not():
    assert len(EXAMPLES) >= 10, "the guide's shell examples were not found"
    assert not ORPHANS, f"BUILD.md lines {ORPHANS}: an example comment with no shell fence below it"
    for e in EXAMPLES:
        if e.mark is not None and e.mark.startswith("skip"):
            assert e.skip_reason and len(e.skip_reason) >= 10, f"BUILD.md:{e.line}: a skipped example must say why"
    assert RUNNABLE, "no example runs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shims(bin_dir: Path) -> Path:
    """`flyte-build` and `python` of this interpreter, first on PATH."""
    bin_dir.mkdir()
    for name, line in (("flyte-build", f'exec "{sys.executable}" -m flyte_build "$@"'), ("python", f'exec "{sys.executable}" "$@"')):
        p = bin_dir / name
        p.write_text(f"#!/bin/sh\n{line}\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return bin_dir


@pytest.mark.timeout(600)
@pytest.mark.parametrize("example", RUNNABLE, ids=[f"{n}-{e.name()}" for n, e in enumerate(RUNNABLE)])
def test_example_runs(example: Example, tmp_path):
    work = tmp_path / "repo"
    work.mkdir()
    copy_sample(work / "sample_monorepo")
    script = example.script()
    if "free-port" in example.options:
        script = script.replace(example.options["free-port"], str(_free_port()))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "FLYTE_BUILD_DEBUG")}
    env.update(PATH=f"{_shims(tmp_path / 'bin')}{os.pathsep}{env.get('PATH', '')}", FLYTE_BUILD_CACHE_DIR=str(tmp_path / "cache"),
               NO_COLOR="1", COLUMNS="200", PYTHONDONTWRITEBYTECODE="1")
    if example.options.get("daemon") == "on":
        env.pop("FLYTE_BUILD_DAEMON", None)
    cwd = work / example.options.get("cwd", ".")
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          errors="replace", timeout=540, stdin=subprocess.DEVNULL, start_new_session=True)
    shown = f"BUILD.md:{example.line}\n$ {script}\nrc={proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == int(example.options.get("exit", 0)), shown
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and "internal error" not in output, shown
    for piece in example.expects:
        assert piece in output, f"{piece!r} missing\n{shown}"
    shutil.rmtree(work, ignore_errors=True)
