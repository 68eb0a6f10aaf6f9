"""`.dockerignore` as Docker reads it: Go filepath.Match on the whole path, `**`,
`!` exceptions, and a pattern matching a directory excludes what is under it."""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path


def _pattern_regex(pat: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**", i):
            i += 2
            if pat.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pat.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                cls = pat[i + 1 : j]
                if cls.startswith("^") or cls.startswith("!"):
                    cls = "^" + cls[1:]
                out.append(f"[{cls}]")
                i = j
        elif c == "\\" and i + 1 < len(pat):
            i += 1
            out.append(re.escape(pat[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def parse_dockerignore(text: str) -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:].strip()
        line = posixpath.normpath(line.lstrip("/")) if line.lstrip("/") else "."
        rules.append((negate, _pattern_regex(line)))
    return rules


def dockerignored(rules: list[tuple[bool, re.Pattern]], rel: str) -> bool:
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def dockerfile_context(directory: Path) -> dict[str, str]:
    """The files of a `from_dockerfile` build context, after its `.dockerignore`."""
    ignore = directory / ".dockerignore"
    rules = parse_dockerignore(ignore.read_text(encoding="utf-8", errors="replace")) if ignore.is_file() else []
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        rel_dir = Path(os.path.relpath(dirpath, directory)).as_posix()
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not dockerignored(rules, rel):
                out[rel] = path
    return dict(sorted(out.items()))
