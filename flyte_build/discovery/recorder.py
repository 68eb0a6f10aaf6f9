"""What discovery's child records while it imports the user's modules (the
child's side of `reads`): the files opened, the directories listed and the
environment variables read (`ReadRecorder`: an audit hook for `open`,
`os.listdir` and `os.scandir`, and a recording `os.environ`), less the Python
installation and installed packages (`ignored_prefixes`); and which module it
is importing, written to a progress file for the timeout message
(`write_progress`). Standard library only, beside `children`.
"""

from __future__ import annotations

import os
import sys

from ..processes.children import installed_under

ENV_ALL = "*"  # the whole environment was read (iterated or copied)


KINDS = ("files", "dirs", "environ")


class ReadRecorder:
    """Records the files opened, directories listed and environment variables
    read while `active`. Audit hooks cannot be removed, so this one is
    switched off rather than uninstalled.

    Each read is also charged to the code that made it: the nearest frame
    outside the standard library (`Path.read_text`, `json.load` and
    `os.getenv` are the user's reads). When that is a file under `root`, the
    witness belongs to that file, and only the environments whose import
    closure holds it depend on it (a helper in `libs/` that reads and caches
    `settings.json` is in the closure of every env that uses it). A read by
    an installed library (flyte's config lookup, which flyte caches for the
    next module) or by no Python code belongs to every environment."""

    def __init__(self, ignore_prefixes: tuple[str, ...], root: str | None = None):
        self.files: set[str] = set()
        self.dirs: set[str] = set()
        self.stats: set[str] = set()  # existence and type asked (os.stat: os.path.exists, Path.is_file...)
        self.environ: set[str] = set()
        self.owned: dict[str, dict[str, set[str]]] = {}
        self.unowned: dict[str, set[str]] = {k: set() for k in KINDS}
        self.active = False
        self.log: list | None = None  # the warm child's: every read with who made it (see `note`)
        self._ignore = tuple(p.rstrip("/") + "/" for p in ignore_prefixes if p)
        self._roots = tuple({r.rstrip("/") + "/" for r in (root, os.path.realpath(root)) if r}) if root else ()
        # a `.venv` inside the root holds installed libraries, not the project's code
        self._installed = installed_under(root) if root else ()
        import sysconfig

        paths = sysconfig.get_paths()
        self._stdlib = tuple({paths[k].rstrip("/") + "/" for k in ("stdlib", "platstdlib") if paths.get(k)})

    def add(self, kind: str, value: str) -> None:
        getattr(self, kind).add(value)
        owner = self.charged(sys._getframe(2))
        if owner is not None:
            self.owned.setdefault(owner, {k: set() for k in KINDS})[kind].add(value)
        else:
            self.unowned[kind].add(value)
        self.note(kind, value, owner)

    def charged(self, frame) -> str | None:
        """The user file the read made by `frame` is charged to (None: an installed library's, or no code's)."""
        while frame is not None:
            f = frame.f_code.co_filename
            if not (f.startswith("<") or (f.startswith(self._stdlib) and "-packages/" not in f)):
                break
            frame = frame.f_back
        owner = frame.f_code.co_filename if frame is not None else ""
        if self._roots and owner.startswith(self._roots) and not (
                self._installed and os.path.realpath(owner).startswith(self._installed)):
            return owner
        return None

    def note(self, kind: str, value: str, charged: str | None) -> None:
        """Log a read with the file it is charged to and the user module whose
        body was running (its `__file__`, None when none was): the warm child
        knows from it which modules to run again when what they read changes."""
        if self.log is None:
            return
        frame, body = sys._getframe(1), None
        while frame is not None:
            if frame.f_code.co_name == "<module>":
                f = frame.f_globals.get("__file__")
                if isinstance(f, str) and f.startswith(self._roots) and not (
                        self._installed and os.path.realpath(f).startswith(self._installed)):
                    body = f
                    break
            frame = frame.f_back
        self.log.append((kind, value, charged, body))

    def _path(self, raw) -> str | None:
        if isinstance(raw, int) or raw is None:
            return None  # an fd: its file was recorded when it was opened
        try:
            p = os.path.abspath(os.fsdecode(raw))
        except (TypeError, ValueError):
            return None
        if p.startswith(self._ignore) or "/__pycache__/" in p:
            return None
        return p

    def _hook(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        if event in ("open", "os.listdir", "os.scandir") and _by_import_system(sys._getframe(1)):
            return  # the import system reading modules and listing sys.path: witnessed as modules
        if event == "open":
            if args and isinstance(args[0], (str, bytes)) and _names_environ_file(args[0]):
                self.environ.add(ENV_ALL)  # /proc/self/environ: the whole environment, read as a file
                self.note("environ", ENV_ALL, None)
                return
            p = self._path(args[0])
            if p is not None:
                self.add("files", p)
        elif event in ("os.listdir", "os.scandir"):
            p = self._path(args[0] if args and args[0] is not None else ".")
            if p is not None:
                self.add("dirs", p)

    def install(self) -> None:
        sys.addaudithook(self._hook)
        _record_environ(self)
        _record_stats(self)
        self.active = True

    def stop(self) -> None:
        self.active = False

    def to_json(self) -> dict:
        return {"files": sorted(self.files), "dirs": sorted(self.dirs), "stats": sorted(self.stats),
                "environ": sorted(self.environ), "unowned": {k: sorted(v) for k, v in self.unowned.items()},
                "owners": {f: {k: sorted(v) for k, v in got.items()} for f, got in sorted(self.owned.items())}}


def _names_environ_file(raw) -> bool:
    p = os.path.abspath(os.fsdecode(raw))
    return p in ("/proc/self/environ", "/proc/thread-self/environ", f"/proc/{os.getpid()}/environ")


def _record_stats(rec: ReadRecorder) -> None:
    """Make `os.stat` and `os.lstat` note the paths they are asked about while
    `rec` is active: `os.path.exists`/`isfile`/`isdir`/`islink`/`lexists` and
    `Path.exists`/`is_file`/`is_dir`/`is_symlink` go through them, and no audit
    event sees them. The import system stats through `posix` directly, and
    `realpath` (`Path.resolve`) walks every parent of a path: neither counts."""
    for name in ("stat", "lstat"):
        setattr(os, name, _recording(rec, getattr(os, name)))


def _recording(rec: ReadRecorder, real):
    def call(path, *args, **kwargs):
        if rec.active and kwargs.get("dir_fd") is None and not _by_realpath(sys._getframe(1)):
            p = rec._path(path)
            if p is not None:
                rec.stats.add(p)
                if rec.log is not None:
                    rec.note("stats", p, rec.charged(sys._getframe(1)))
        return real(path, *args, **kwargs)

    return call


def _by_realpath(frame) -> bool:
    return frame is not None and frame.f_code.co_name in ("_joinrealpath", "realpath") \
        and frame.f_globals.get("__name__") == "posixpath"


def _by_import_system(frame) -> bool:
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith("<frozen importlib"):
            return True
        if not name.startswith("<"):
            return False
        frame = frame.f_back
    return False


def _record_environ(rec: ReadRecorder) -> None:
    """Make `os.environ` note every variable read while `rec` is active (also
    through `os.getenv`, which uses it); iterating or copying it reads them all."""
    base = type(os.environ)

    class RecordingEnviron(base):  # type: ignore[misc, valid-type]
        def __getitem__(self, key):
            if rec.active and not _by_path_lookup(sys._getframe(1)):
                rec.add("environ", _name(key))
            return base.__getitem__(self, key)

        def __contains__(self, key):
            if rec.active and not _by_path_lookup(sys._getframe(1)):
                rec.add("environ", _name(key))
            return base.__contains__(self, key)

        def __iter__(self):
            if rec.active:
                rec.add("environ", ENV_ALL)
            return base.__iter__(self)

    os.environ.__class__ = RecordingEnviron
    if hasattr(os, "environb"):  # os.environb and os.getenvb: the same variables, as bytes
        os.environb.__class__ = RecordingEnviron


# PATH read to find a program for subprocess, HOME read to expand `~`: what they
# decide is witnessed where it lands (the file opened, flyte's config candidates),
# and their values are this machine's, so as witnesses they would give every
# machine and every virtualenv its own specs keys.
_PATH_LOOKUPS = {("os", "get_exec_path"), ("posixpath", "expanduser")}


def _by_path_lookup(frame, depth: int = 4) -> bool:
    while frame is not None and depth > 0:
        if (frame.f_globals.get("__name__"), frame.f_code.co_name) in _PATH_LOOKUPS:
            return True
        frame, depth = frame.f_back, depth - 1
    return False


def _name(key) -> str:
    return os.fsdecode(key) if isinstance(key, bytes) else str(key)


_progress_fds: dict[str, int] = {}


def write_progress(path: str | None, module: str, file: str) -> None:
    """Name the module about to be imported (read by the parent on a timeout).

    One line appended per module to a file opened once: rewriting the file in
    place (open with O_TRUNC, write, close) costs a few milliseconds a module on
    ext4, which flushes a truncated file's data on close (auto_da_alloc) --
    seconds at thousands of modules. The parent reads the last line."""
    if not path:
        return
    try:
        fd = _progress_fds.get(path)
        if fd is None:
            fd = _progress_fds[path] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(fd, f"{module}\t{file}\n".encode("utf-8", "surrogateescape"))
    except OSError:
        pass


def ignored_prefixes(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The Python installation and installed packages (keyed by version
    elsewhere), and the kernel's pseudo-files."""
    import site
    import sysconfig

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, "/proc", "/sys", "/dev"}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    try:
        paths.update(site.getsitepackages())
        paths.add(site.getusersitepackages())
    except AttributeError:  # virtualenv's old site module
        pass
    flyte_build_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths.add(flyte_build_dir)
    paths.update(extra)
    return tuple(sorted({q for p in paths if p for q in (os.path.abspath(p), os.path.realpath(p))}))
