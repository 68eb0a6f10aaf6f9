"""What discovery's child actually read.

Discovery's result depends on more than the modules it imported: a module may
read a data file at import (`settings.json` choosing the image and memory),
list a directory, or read environment variables (`STAGE=prod`), and flyte
reads its own config. The child records all of it (`ReadRecorder`: an audit
hook for `open`, `os.listdir` and `os.scandir`, and a recording
`os.environ`); the parent turns the records into witnesses (a digest per file,
per directory listing and per variable) that are part of the discovery
cache's validity and of the serialization key, so a change to any of them
means a new discovery, new specs and a new version. Files of the Python
installation and of installed packages are left out: the Python and flyte
versions already key discovery.

The child also writes which module it is importing to a progress file (for
the timeout message). How it runs (its own session, a deadline, dying with its
parent) is `children`'s.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
from pathlib import Path

from ..processes.children import installed_under
from ..hashing import key_of

ENV_ALL = "*"  # the whole environment was read (iterated or copied)
_HEX64 = re.compile(r"[0-9a-f]{64}")


# -- in the child ----------------------------------------------------------------


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
        self._ignore = tuple(p.rstrip("/") + "/" for p in ignore_prefixes if p)
        self._roots = tuple({r.rstrip("/") + "/" for r in (root, os.path.realpath(root)) if r}) if root else ()
        # a `.venv` inside the root holds installed libraries, not the project's code
        self._installed = installed_under(root) if root else ()
        import sysconfig

        paths = sysconfig.get_paths()
        self._stdlib = tuple({paths[k].rstrip("/") + "/" for k in ("stdlib", "platstdlib") if paths.get(k)})

    def add(self, kind: str, value: str) -> None:
        getattr(self, kind).add(value)
        frame = sys._getframe(2)
        while frame is not None:
            f = frame.f_code.co_filename
            if not (f.startswith("<") or (f.startswith(self._stdlib) and "-packages/" not in f)):
                break
            frame = frame.f_back
        owner = frame.f_code.co_filename if frame is not None else ""
        if self._roots and owner.startswith(self._roots) and not (
                self._installed and os.path.realpath(owner).startswith(self._installed)):
            self.owned.setdefault(owner, {k: set() for k in KINDS})[kind].add(value)
        else:
            self.unowned[kind].add(value)

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


def code_print(code) -> str:
    """A fingerprint of a compiled module: its bytecode, constants, names, line
    table and those of every function and class in it, not its file name. An
    edit that leaves it the same (a comment, trailing blank lines) runs the
    same code at import, so discovery's result stands (see `discovery`)."""
    h = hashlib.blake2b(digest_size=16)
    _feed_code(code, h)
    return h.hexdigest()


def _feed_code(co, h) -> None:
    h.update(repr((co.co_argcount, co.co_posonlyargcount, co.co_kwonlyargcount, co.co_nlocals, co.co_stacksize,
                   co.co_flags, co.co_firstlineno, co.co_name, getattr(co, "co_qualname", ""), co.co_names,
                   co.co_varnames, co.co_freevars, co.co_cellvars, len(co.co_consts))).encode())
    for part in (co.co_code, co.co_linetable, getattr(co, "co_exceptiontable", b"")):
        h.update(len(part).to_bytes(8, "little") + part)
    for c in co.co_consts:
        if hasattr(c, "co_code"):
            h.update(b"\x00code")
            _feed_code(c, h)
        else:
            text = _const_text(c).encode("utf-8", "surrogatepass")
            h.update(len(text).to_bytes(8, "little") + text)


def _const_text(c) -> str:
    # a frozenset's repr follows string hashing (PYTHONHASHSEED): sort its members
    if isinstance(c, frozenset):
        return "frozenset:" + repr(sorted(_const_text(x) for x in c))
    if isinstance(c, tuple):
        return "tuple:" + repr([_const_text(x) for x in c])
    return f"{type(c).__name__}:{c!r}"


class CodePrints:
    """The `code_print` of every user module the import system compiles while
    installed, by file (through `SourceLoader.source_to_code`, which every
    source import goes through; a module loaded from a `.pyc` gets none).
    Where the parent compiled the module already (`handed`), its code and
    print are used instead of compiling again."""

    def __init__(self, root: str, handed=None):
        self.prefix = root.rstrip("/") + "/"
        self.prints: dict[str, str] = {}  # absolute path -> print
        self._orig = None
        self.handed = handed  # a discovery_code.Handed: code the parent compiled already

    def install(self) -> None:
        import importlib._bootstrap_external as be

        orig = self._orig = be.SourceLoader.source_to_code
        prints, prefix, handed = self.prints, self.prefix, self.handed

        def source_to_code(loader, data, path, *, _optimize=-1):
            got = handed.take(path, data, _optimize) if handed is not None and isinstance(path, str) else None
            if got is not None:
                prints[path] = got[1]
                return got[0]
            code = orig(loader, data, path, _optimize=_optimize)
            # the parent compiles with optimize=0 to compare: an -O child (PYTHONOPTIMIZE) records none
            if isinstance(path, str) and path.startswith(prefix) and _optimize == -1 and not sys.flags.optimize:
                prints[path] = code_print(code)
            return code

        be.SourceLoader.source_to_code = source_to_code

    def uninstall(self) -> None:
        import importlib._bootstrap_external as be

        be.SourceLoader.source_to_code = self._orig

    def by_file(self, root: str, read: set[str]) -> dict[str, str]:
        """{file relative to the root: print}, less the files something read as
        text at import (`inspect.getsource`, `open(__file__)`): their text, not
        only their code, may be in the result."""
        return {os.path.relpath(p, root): v for p, v in sorted(self.prints.items()) if os.path.abspath(p) not in read}


# -- in the parent ---------------------------------------------------------------


def read_progress(path: str) -> tuple[str, str] | None:
    """The module the child named last (`write_progress`), or None."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            tail = f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None
    last = tail.rstrip("\n").rsplit("\n", 1)[-1]
    module, _, file = last.partition("\t")
    return (module, file) if module else None


def _file_digest(path: str, digests) -> str | None:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            # a directory opened for os.walk (its listing is what matters), or a FIFO or
            # device (a witness from the shared cache could name one): never read
            return None
        return digests.digest(path)[0]
    except OSError:
        return None  # missing (or unreadable): its appearing later is a change


def _listing(path: str) -> str | None:
    """The digest of a directory's names, less what no bundle ever ships and
    only a working tree has (`__pycache__`, `.venv`, tool caches, `*.pyc`):
    Python writing bytecode is no change, and an exported revision has none."""
    from ..archives.bundle_files import STANDARD_IGNORED_DIRS, STANDARD_IGNORED_SUFFIXES

    try:
        names = os.listdir(path)
    except OSError:
        return None
    return key_of(sorted(n for n in names if n not in STANDARD_IGNORED_DIRS and not n.endswith(STANDARD_IGNORED_SUFFIXES)))


def env_value(name: str, environ=os.environ) -> str | None:
    """A variable's value as it enters a key: hashed (values may be secrets), None when unset.
    ENV_ALL stands for the whole environment."""
    if name == ENV_ALL:
        return key_of(sorted(environ.items()))
    value = environ.get(name)
    return None if value is None else hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def flyte_config_candidates(root: Path, environ=os.environ) -> list[str]:
    """Every file flyte's config lookup may pick (`flyte.config` reads the first
    that exists: ./config.yaml, ./.flyte/config.yaml, <git root>/.flyte/config.yaml,
    $UCTL_CONFIG, $FLYTECTL_CONFIG, ~/.union/config.yaml, ~/.flyte/config.yaml),
    from the child's working directory, the root. Flyte tests existence with a
    stat, which no audit hook sees, so all of them are witnessed: one appearing
    or changing is a change."""
    out = [root / "config.yaml", root / ".flyte" / "config.yaml"]
    top = git_top(root)
    if top is not None:
        out.append(top / ".flyte" / "config.yaml")
    out += [Path(environ[v]) for v in ("UCTL_CONFIG", "FLYTECTL_CONFIG") if environ.get(v)]
    home = Path(environ.get("HOME") or Path.home())
    out += [home / ".union" / "config.yaml", home / ".flyte" / "config.yaml"]
    return [os.path.abspath(root / p) for p in out]


def witnesses(reads: dict, root: Path, digests, skip: set[str]) -> dict:
    """{"files": {path: digest}, "dirs": {path: listing digest}, "environ": {name: value digest}}
    for the recorded reads; `skip` (relative names already witnessed, the
    imported modules) left out. Paths under the root are named relative to it,
    those elsewhere in its git work tree by `../` (the git root's
    `.flyte/config.yaml` is `../.flyte/config.yaml` for a project in `ml/`),
    flyte's per-user files by `~/`: the names enter the specs keys, which must
    not depend on where the repository is checked out."""
    name = _namer(root)
    files = {}
    for p in [*reads.get("files", ()), *flyte_config_candidates(root)]:
        n = name(p)
        if n not in skip:
            files[n] = _file_digest(p, digests)
    dirs = {name(p): _listing(p) for p in reads.get("dirs", ())}
    environ = {n: env_value(n) for n in reads.get("environ", ())}
    out = {"files": files, "dirs": dirs, "environ": environ}
    stats = _stat_witnesses(reads.get("stats", ()), root, name, set(files) | skip)
    if stats:  # only then: keys of discoveries that asked nothing stay as they were
        out["stats"] = stats
    owners = _owners(reads, name, out, {name(p) for p in flyte_config_candidates(root)})
    if owners is not None:
        out["owners"] = owners
    return out


def _stat_witnesses(paths, root: Path, name, known: set[str]) -> dict:
    """{name: what is there} for the paths asked about, less those witnessed by
    content already, the root and its parents (their names would hold the
    checkout's path, and an import-time test of them decides nothing here)."""
    root_s = str(root).rstrip("/") + "/"
    out = {}
    for p in paths:
        if root_s.startswith(p.rstrip("/") + "/"):
            continue
        n = name(p)
        if n not in known:
            out[n] = _kind(p)
    return out


def _kind(path: str) -> str | None:
    """"file", "dir" or "other" (following symlinks), None when missing or unreadable."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"


def _owners(reads: dict, name, w: dict, candidates: set[str]) -> dict | None:
    """{module: {kind: [witness name]}}: the witnesses only that module's load read
    (see ReadRecorder); what was also read outside any module body, and flyte's
    config candidates, belong to every environment and to no module."""
    got, unowned = reads.get("owners"), reads.get("unowned")
    if not isinstance(got, dict) or not isinstance(unowned, dict):
        return None  # a child that did not charge its reads: one witness for all
    nm = {"files": name, "dirs": name, "environ": lambda v: v}
    common = {k: {nm[k](p) for p in unowned.get(k, ())} for k in KINDS}
    common["files"] |= candidates
    out = {}
    for owner, kinds in sorted(got.items()):
        mine = {k: sorted(({nm[k](p) for p in kinds.get(k, ())} - common[k]) & set(w[k])) for k in KINDS}
        mine = {k: v for k, v in mine.items() if v}
        if mine:
            out[name(owner)] = mine
    return out


def witness_for(reads: dict, files) -> str | None:
    """The key of the witnesses an environment whose import closure is `files`
    (names relative to the root) depends on: all but those only modules outside
    the closure read. None when `reads` charges nothing to modules."""
    try:
        owners = reads["owners"]
        inside: dict[str, set] = {k: set() for k in KINDS}
        outside: dict[str, set] = {k: set() for k in KINDS}
        wanted = set(files)
        for mod, kinds in owners.items():
            for k in KINDS:
                (inside if mod in wanted else outside)[k].update(kinds.get(k, ()))
        drop = {k: outside[k] - inside[k] for k in KINDS}
        # nothing dropped: the whole witness's key (without `owners`), as before owners were kept
        return key_of({k: ({n: v for n, v in v_.items() if n not in drop[k]} if k in KINDS else v_)
                       for k, v_ in reads.items() if k != "owners"})
    except (KeyError, AttributeError, TypeError):
        return None


def _namer(root: Path):
    root_s = str(root).rstrip("/") + "/"
    home_s = os.path.expanduser("~").rstrip("/") + "/"
    top = git_top(root)
    top_s = str(top).rstrip("/") + "/" if top is not None and top != root else None
    per_user = {os.path.join(home_s, d, "config.yaml") for d in (".flyte", ".union")}

    def name(p: str) -> str:
        if p.startswith(root_s):
            return p[len(root_s):]
        if top_s and p.startswith(top_s) and p not in per_user:
            return Path(os.path.relpath(p, root)).as_posix()
        # `~/.flyte/config.yaml`, not this user's home
        return "~/" + p[len(home_s):] if home_s != "/" and p.startswith(home_s) else p

    return name


def git_top(root: Path) -> Path | None:
    """The nearest directory at or above `root` holding `.git` (a directory, or a worktree's file)."""
    for d in (root, *root.parents):
        if (d / ".git").exists():
            return d
    return None


def shared_names_why_not(recorded, root: Path) -> str | None:
    """Why witnesses from (or for) the shared cache cannot be checked safely here,
    or None. A shared document is untrusted: before anything is opened, every
    file or directory it names must be a plain relative path whose real path is
    inside the root, or one of flyte's config files this reader witnesses
    itself (`flyte_config_candidates`); values must be 64 hex or null."""
    if not (isinstance(recorded, dict) and set(recorded) <= {*KINDS, "owners"}
            and all(isinstance(g, dict) for g in recorded.values())):
        return "malformed witnesses"
    if not _owners_well_formed(recorded):
        return "malformed owners of witnesses"
    name = _namer(root)
    own = {name(p) for p in flyte_config_candidates(root)}
    real_root = os.path.realpath(root)
    for group, names in recorded.items():
        if group == "owners":
            continue
        for n, v in names.items():
            if not (isinstance(n, str) and (v is None or (isinstance(v, str) and _HEX64.fullmatch(v)))):
                return f"malformed {group} witness"
            if group == "environ" or (group == "files" and n in own):
                continue
            if not plain_inside(n, real_root):
                return f"witness {n[:200]!r} is not a path inside the project root"
    return None


def _owners_well_formed(recorded: dict) -> bool:
    """`owners` only partitions names the witnesses already hold: module -> kind -> [name]."""
    for mod, kinds in (recorded.get("owners") or {}).items():
        if not (isinstance(mod, str) and isinstance(kinds, dict) and set(kinds) <= set(KINDS)):
            return False
        for k, names in kinds.items():
            if not (isinstance(names, list) and all(isinstance(n, str) and n in recorded.get(k, {}) for n in names)):
                return False
    return True


def plain_inside(rel: str, real_root: str) -> bool:
    if not rel or rel.startswith(("/", "~")) or "\\" in rel or "\0" in rel:
        return False
    if any(p in ("", ".", "..") for p in rel.split("/")):
        return False
    # no symlink in the repository leads the read elsewhere
    return os.path.realpath(os.path.join(real_root, rel)).startswith(real_root.rstrip("/") + "/")


def outside_tree(recorded: dict) -> dict:
    """The witnesses a revision's commit does not decide: variables and files
    named outside the root (`../`, `~/`, absolute). A revision's own files are
    its commit's, whatever the work tree holds now."""
    def out(group: str) -> dict:
        return {n: v for n, v in (recorded.get(group) or {}).items() if n.startswith(("/", "~/", "../"))}

    return {"files": out("files"), "dirs": out("dirs"), "environ": dict(recorded.get("environ") or {})}


def witness_path(name: str, root) -> str:
    """The path a witness name stands for: relative to the root (`../` for its
    parents), `~/` to the home directory."""
    if name.startswith("~/"):
        return os.path.join(os.path.expanduser("~"), name[2:])
    return name if os.path.isabs(name) else os.path.normpath(os.path.join(str(root), name))


def still_valid(recorded: dict, root: Path, digests) -> bool:
    """True while every recorded witness has the value it had (False for a
    record of another shape)."""
    if not recorded:
        return True
    try:
        return _still_valid(recorded, root, digests)
    except (AttributeError, TypeError, ValueError):
        return False


def _still_valid(recorded: dict, root: Path, digests) -> bool:
    for n, hex_ in recorded.get("files", {}).items():
        if _file_digest(witness_path(n, root), digests) != hex_:
            return False
    for n, listing in recorded.get("dirs", {}).items():
        if _listing(witness_path(n, root)) != listing:
            return False
    for n, kind in recorded.get("stats", {}).items():
        if _kind(witness_path(n, root)) != kind:
            return False
    return all(env_value(n) == v for n, v in recorded.get("environ", {}).items())


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
