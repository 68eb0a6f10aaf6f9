"""Whole-build snapshots: a no-op `build --json` answered from one file of stats.

A successful `build --json` whose targets are all bundles records what the
next identical run would print, with every input it depended on: the
`stat` signature (size, mtime, inode, ctime) of each file the run digested
(sources, ignore files, the config, flyte's version marker, flyte-build's own
modules), the mtime of each directory whose listing decided something (the
discovery walk, import resolution, the directories holding those files and
those from the working directory up to the root, where a new pyproject.toml
would move the root), and the signature of each output blob and action entry
in the local cache. The snapshot is keyed by everything else that can change
the answer: the command line, the working directory, the environment (each
value as a checksum, so no credential in a variable is written to the cache),
the Python and flyte-build's version.

The next run with the same key stats those paths and, if every signature is
unchanged, prints the recorded answer without importing anything else (no
argparse, no discovery, no engine: ~0.1 s at 5,000 files). One changed
signature and the normal build runs. As with the stat cache (and git), a
path modified within the last two seconds before the snapshot is written
makes it unusable: its mtime could not tell a second edit in the same tick.

This module runs before anything else in the process, so it imports only
what Python has loaded at start-up anyway (`os`, `sys`) plus `zlib` for the
file name: no json (which pulls in `re`), no hashlib (OpenSSL). The file is
plain text, one path per line, and holds its full key, compared exactly;
the answer comes last, its length in bytes in the third line.
"""

from __future__ import annotations

import os
import sys

from ..__about__ import __version__
from .cache_dir import default_cache_path

FORMAT = 2  # 2: the answer's length in bytes, so a reader finds it without splitting the lines
MAGIC = f"flyte-build-snapshot {FORMAT}"
RACY_NS = 2_000_000_000
# variables that differ between two runs of the same command in one shell and
# that flyte-build never reads
_VOLATILE_ENV = frozenset({"_", "OLDPWD", "SHLVL", "PS1", "PS2", "TERM_SESSION_ID", "COLUMNS", "LINES"})
_NOT_RECORDED = ("--out", "--changed-since", "--storage")


def _key(argv: list[str]) -> str:
    """Everything besides the recorded paths that can change the answer, as one
    line (repr escapes newlines)."""
    # each value as a checksum, never as written: variables carry credentials (a
    # cache token, cloud keys) and the snapshot is a file in the cache directory
    env = tuple(sorted((k, _checksum(v)) for k, v in os.environ.items() if k not in _VOLATILE_ENV))
    return repr((FORMAT, __version__, sys.executable, tuple(sys.version_info[:3]), os.getcwd(), tuple(argv), env))


def _checksum(value: str) -> str:
    """64 bits of checksum and the length: a changed variable changes the key
    (zlib, not hashlib: this module imports nothing slow)."""
    import zlib

    raw = value.encode("utf-8", "surrogateescape")
    return f"{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}{len(raw):x}"


def _cache_dir(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a == "--cache-dir" and i + 1 < len(argv):
            return os.path.expanduser(argv[i + 1])
        if a.startswith("--cache-dir="):
            return os.path.expanduser(a.split("=", 1)[1])
    return default_cache_path()


def _path(argv: list[str], key: str) -> str:
    import zlib

    raw = key.encode("utf-8", "surrogateescape")
    # a name, not a proof: the file holds the whole key and it is compared exactly
    name = f"{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}{len(raw):x}"
    return os.path.join(_cache_dir(argv), "state", "snapshots", name + ".txt")


def eligible(argv: list[str]) -> bool:
    """Whether `argv` is a command a snapshot may answer: a `build --json` with
    no flag that writes outside the cache or depends on git."""
    return "build" in argv and "--json" in argv and not any(a.split("=", 1)[0] in _NOT_RECORDED for a in argv)


class Loaded:
    """A snapshot file read, its key equal to this run's: the answer, and the
    file's own stat signature as read (`sig`), which names this content to
    the resident process (see flyte_build.daemon.noop_answers). The recorded
    lines are split only when asked for (`files`, `dirs`): a no-op the
    resident process answers never reads them (20,000 of them at 20,000 files)."""

    __slots__ = ("path", "sig", "out", "code", "_data", "_lines")

    def __init__(self, path, sig, data, out, code):
        self.path, self.sig, self._data, self.out, self.code, self._lines = path, sig, data, out, code, None

    def lines(self) -> tuple[list[str], list[str]] | None:
        """(file lines, directory lines); None when malformed."""
        if self._lines is None:
            parsed = parse(self._data, None)
            self._lines = (parsed[0], parsed[1]) if parsed else ()
        return self._lines or None


def _split(data: bytes) -> tuple[str, str, int, int, int, bytes] | None:
    """(magic, key, files, dirs, exit status, answer bytes) of a snapshot's bytes."""
    try:
        magic, key, counts, _rest = data.split(b"\n", 3)
        n_files, n_dirs, n_out, code = (int(x) for x in counts.split(b" "))
    except ValueError:
        return None
    out = data[len(data) - n_out:] if 0 <= n_out < len(data) else b""
    if data[len(data) - n_out - 1:len(data) - n_out] != b"\n" or len(out) != n_out:
        return None
    return magic.decode("utf-8", "surrogateescape"), key.decode("utf-8", "surrogateescape"), n_files, n_dirs, code, out


def parse(data: bytes, key: str | None) -> tuple[list[str], list[str], str, int] | None:
    """(file lines, directory lines, answer, exit status) of a snapshot's
    bytes whose key is `key` (any key when None); None when malformed."""
    head = _split(data)
    if head is None or head[0] != MAGIC or (key is not None and head[1] != key):
        return None
    _magic, _key, n_files, n_dirs, code, out = head
    lines = data[:len(data) - len(out) - 1].decode("utf-8", "surrogateescape").split("\n")[3:]
    if len(lines) != n_files + n_dirs:
        return None
    return lines[:n_files], lines[n_files:], out.decode("utf-8", "surrogateescape"), code


def signature(st) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def load(argv: list[str]) -> Loaded | None:
    """This run's snapshot when `argv` is eligible and one is recorded for
    exactly this key (nothing is statted but the snapshot file itself)."""
    if not eligible(argv):
        return None
    key = _key(argv)
    path = _path(argv, key)
    try:
        with open(path, "rb") as f:
            sig = signature(os.fstat(f.fileno()))
            data = f.read()
    except OSError:
        return None
    head = _split(data)
    if head is None or head[0] != MAGIC or head[1] != key:
        return None
    return Loaded(path, sig, data, head[5].decode("utf-8", "surrogateescape"), head[4])


def stats_hold(files: list[str], dirs: list[str]) -> bool:
    """Whether every recorded stat signature is still the one on disk."""
    stat = os.stat
    try:
        for line in files:
            size, mtime, ino, ctime, path = line.split(" ", 4)
            st = stat(path)
            if st.st_mtime_ns != int(mtime) or st.st_size != int(size) or st.st_ino != int(ino) or st.st_ctime_ns != int(ctime):
                return False
        for line in dirs:
            mtime, path = line.split(" ", 1)
            if stat(path).st_mtime_ns != int(mtime):
                return False
    except (OSError, ValueError):
        return False
    return True


def emit(loaded: Loaded) -> int:
    sys.stdout.write(loaded.out)
    sys.stdout.flush()
    return loaded.code


def replay(argv: list[str]) -> int | None:
    """Print the recorded answer and return the exit status, or None when the
    snapshot is missing or anything it depends on changed."""
    loaded = load(argv)
    lines = loaded.lines() if loaded is not None else None
    if lines is None or not stats_hold(*lines):
        return None
    return emit(loaded)


def record(argv: list[str], stdout: str, files, dirs) -> None:
    """Keep `stdout` as the answer to `argv` while `files` and `dirs` keep their
    stats. Nothing is written when a path is missing, has a newline in its
    name, or was modified in the last two seconds (see the module's docstring);
    blobs in the cache are named by their content and exempt from the last rule."""
    if not eligible(argv):
        return
    import time

    from .. import atomic

    key = _key(argv)
    cache = os.path.join(_cache_dir(argv), "")
    fresh = time.time_ns() - RACY_NS
    out = [MAGIC, key, ""]
    try:
        fs = sorted(set(files))
        ds = sorted(set(dirs))
        for p in fs:
            st = os.stat(p)
            if "\n" in p or (max(st.st_mtime_ns, st.st_ctime_ns) >= fresh and not p.startswith(cache)):
                return
            out.append(f"{st.st_size} {st.st_mtime_ns} {st.st_ino} {st.st_ctime_ns} {p}")
        for d in ds:
            st = os.stat(d)
            if "\n" in d or st.st_mtime_ns >= fresh:
                return
            out.append(f"{st.st_mtime_ns} {d}")
    except OSError:
        return
    out[2] = f"{len(fs)} {len(ds)} {len(stdout.encode('utf-8', 'surrogateescape'))} 0"
    out.append(stdout)
    try:
        atomic.write_bytes(_path(argv, key), "\n".join(out).encode("utf-8", "surrogateescape"))
    except OSError:
        pass  # a read-only cache only costs speed
