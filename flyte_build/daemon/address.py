"""Where a repository's daemon listens and whether this command uses it,
decided from argv, the environment and the project's pyproject.toml alone.

Imported by the thin client before anything else: `os`, `sys` and `zlib`
(for the name) only; `tomllib` only when the pyproject mentions the daemon.
"""

from __future__ import annotations

import os
import sys

from ..__about__ import __version__
from ..stores.cache_dir import default_cache_path

DEFAULT_IDLE_TIMEOUT = 900.0
ENV = "FLYTE_BUILD_DAEMON"
SWITCH = {"0": False, "false": False, "no": False, "off": False, "1": True, "true": True, "yes": True, "on": True}
# commands that prompt (a deploy's login) or run long stay in the client's process
IN_PROCESS = frozenset({"deploy", "daemon", "watch"})
# Linux's limit for a socket's path is 108 bytes with the terminating NUL;
# a longer one is reached through an open descriptor of its directory
MAX_SOCKET_PATH = 100
TABLES = (("tool", "flyte-build"), ("tool", "hatch", "build", "targets", "flyte"))


def flag(argv: list[str], name: str) -> str | None:
    """The value of a global option as argparse would take it (last one wins)."""
    value = None
    for i, a in enumerate(argv):
        if a == "--":
            break
        if a == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


def project_dir(argv: list[str], cwd: str) -> str:
    """The directory of the nearest pyproject.toml from --root-dir (else the
    working directory) up; without one, that start directory."""
    root = flag(argv, "--root-dir")
    start = os.path.abspath(os.path.join(cwd, os.path.expanduser(root))) if root else cwd
    d = start
    while True:
        if os.path.isfile(os.path.join(d, "pyproject.toml")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return start
        d = parent


def settings(project: str) -> dict:
    """`daemon` and `daemon-idle-timeout` from either config table; {} when
    the file does not mention them. A malformed file or value is left to the
    command's own config check, which names it."""
    path = os.path.join(project, "pyproject.toml")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    if b"daemon" not in data:
        return {}
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    out: dict = {}
    for path_ in TABLES:
        table = doc
        for part in path_:
            table = table.get(part, {}) if isinstance(table, dict) else {}
        if isinstance(table, dict):
            for key in ("daemon", "daemon-idle-timeout"):
                if key in table:
                    out.setdefault(key, table[key])
    return out


def command_word(argv: list[str]) -> str | None:
    """The first argument that names a command (an option's value can shadow
    one: the command then merely runs in-process)."""
    for a in argv:
        if a == "--":
            return None
        if a in IN_PROCESS:
            return a
    return None


def wanted(argv: list[str], environ, conf: dict) -> bool:
    """Whether this command goes to the daemon: never with --no-daemon or for
    the commands that stay in-process; else as $FLYTE_BUILD_DAEMON says (0 or
    1), else as the config's `daemon` says, else outside CI (`$CI` unset)."""
    if "--no-daemon" in argv or command_word(argv) is not None:
        return False
    given = environ.get(ENV, "").strip().lower()
    if given in SWITCH:
        return SWITCH[given]
    configured = conf.get("daemon")
    if isinstance(configured, bool):
        return configured
    return not environ.get("CI")


def idle_timeout(argv: list[str], conf: dict) -> float:
    for raw in (flag(argv, "--daemon-idle-timeout"), conf.get("daemon-idle-timeout")):
        try:
            value = float(raw) if raw is not None and not isinstance(raw, bool) else None
        except ValueError:
            value = None
        if value is not None and value > 0 and value != float("inf"):
            return value
    return DEFAULT_IDLE_TIMEOUT


def cache_dir(argv: list[str]) -> str:
    given = flag(argv, "--cache-dir")
    return os.path.abspath(os.path.expanduser(given)) if given else os.path.abspath(default_cache_path())


def identity(project: str) -> str:
    """What one daemon serves: this repository, with this Python and this copy
    of flyte-build (another install of it gets a daemon of its own)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return repr((project, sys.executable, package, __version__))


def socket_path(cache: str, project: str) -> str:
    import zlib

    raw = identity(project).encode("utf-8", "surrogateescape")
    name = f"{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}"
    return os.path.join(cache, "daemon", name + ".sock")


def reachable(path: str) -> tuple[str, int | None]:
    """An address `bind` and `connect` accept for `path`, and the descriptor
    to close afterwards: a path over Linux's limit goes through its open
    directory (/proc/self/fd/N/NAME). OSError when that directory is missing."""
    if len(path) <= MAX_SOCKET_PATH:
        return path, None
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{os.path.basename(path)}", fd
