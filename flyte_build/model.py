"""Plain data describing a repository's environments, as discovery returns it.

Nothing here imports flyte: after discovery (a child process), the engine
works on these frozen dataclasses and their JSON form only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskInfo:
    name: str  # fully qualified, "<env>.<function>"
    short_name: str
    module: str
    function: str
    file: str  # relative to the root (POSIX), or an absolute path outside it
    inputs: tuple[tuple[str, str], ...] = ()
    outputs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, d: dict) -> "TaskInfo":
        return cls(
            name=d["name"], short_name=d["short_name"], module=d["module"], function=d["function"], file=d["file"],
            inputs=tuple(tuple(x) for x in d.get("inputs", ())), outputs=tuple(tuple(x) for x in d.get("outputs", ())),
        )


@dataclass(frozen=True)
class EnvSpec:
    name: str
    variable: str | None
    file: str  # the defining file, relative to the root
    module: str
    depends_on: tuple[str, ...] = ()
    image: Any = "auto"  # "auto", a URI string, None, or the plain image spec (dict)
    resources: dict | None = None
    env_vars: dict = field(default_factory=dict)
    include: tuple[str, ...] = ()  # extra files, relative to the root
    tasks: tuple[TaskInfo, ...] = ()
    selected: bool = True  # False when present only as a dependency of a selected env
    extra: dict = field(default_factory=dict)  # description, secrets, cache, queue, ...; "app" for apps
    kind: str = "task"  # "task" (a flyte.TaskEnvironment) or "app" (a flyte.app.AppEnvironment)
    # user files (relative) discovery saw loaded while importing the env's own
    # modules (its file and its tasks' files): part of its bundle
    loaded: tuple[str, ...] = ()

    @property
    def is_app(self) -> bool:
        return self.kind == "app"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "EnvSpec":
        return cls(
            name=d["name"], variable=d.get("variable"), file=d["file"], module=d["module"],
            depends_on=tuple(d.get("depends_on", ())), image=d.get("image", "auto"), resources=d.get("resources"),
            env_vars=d.get("env_vars") or {}, include=tuple(d.get("include", ())),
            tasks=tuple(TaskInfo.from_json(t) for t in d.get("tasks", ())), selected=d.get("selected", True),
            extra=d.get("extra") or {}, kind=d.get("kind", "task"), loaded=tuple(d.get("loaded", ())),
        )

    def spec_fingerprint(self) -> dict:
        """The parts of the declaration that configure what is built and deployed."""
        d = self.to_json()
        d.pop("selected", None)
        return d


@dataclass(frozen=True)
class LoadFailure:
    file: str
    message: str


@dataclass(frozen=True)
class Discovery:
    envs: tuple[EnvSpec, ...]
    loaded_files: tuple[str, ...] = ()  # user files under the root that were imported
    sys_path: tuple[str, ...] = ()  # sys.path entries under the root, relative
    failures: tuple[LoadFailure, ...] = ()
    cached: bool = False
    # how this result was had: "cached" (no user code imported), "incremental"
    # (only the modules an edit affects were imported, the rest reused) or "full"
    how: str = "full"
    requested: tuple[str, ...] = ()  # the modules the child was asked to import (none if cached)
    # every candidate module of the selection, in import order: what task
    # serialization imports again to see the same loaded state
    candidates: tuple[str, ...] = ()
    # flyte's configuration as the child read it (non-secret task and image
    # settings: {name: {"value", "source"}}), so a cached run needs no flyte
    flyte: dict = field(default_factory=dict)
    walked_dirs: tuple[str, ...] = ()  # directories (relative) whose listing gave the candidate modules
    # the key of what the modules read besides themselves (files, directories,
    # environment variables: see discovery_reads); part of the serialization key
    witness: str = ""
    witness_paths: tuple[str, ...] = ()  # the files and directories behind it (for whole-build snapshots)
    reads: dict = field(default_factory=dict, compare=False)  # the witnesses themselves (discovery_reads)
    # the shared cache's content key of this result (see shared_discovery), when
    # this run computed it: a shared build manifest is keyed on it (build_manifest)
    content_key: str = field(default="", compare=False)
    # resolved imports a shared entry carried, checked against this tree's files
    # (see carried_imports.verified): the bundles' closures need not resolve them
    carried_imports: dict = field(default_factory=dict, compare=False)
    # why a warm discovery (see warm.py) ran a cold child instead of a fork; shown with -v
    note: str = field(default="", compare=False)
    # the installed distributions the modules imported beyond flyte's own (see discovery/distributions)
    distributions: tuple[str, ...] = ()

    def env(self, name: str) -> EnvSpec:
        for e in self.envs:
            if e.name == name:
                return e
        raise KeyError(name)

    def to_json(self) -> dict:
        return {
            "envs": [e.to_json() for e in self.envs],
            "loaded_files": list(self.loaded_files),
            "sys_path": list(self.sys_path),
            "failures": [asdict(f) for f in self.failures],
        }

    @classmethod
    def from_json(cls, d: dict, cached: bool = False, how: str | None = None) -> "Discovery":
        return cls(
            envs=tuple(EnvSpec.from_json(e) for e in d["envs"]),
            loaded_files=tuple(d.get("loaded_files", ())),
            sys_path=tuple(d.get("sys_path", ())),
            failures=tuple(LoadFailure(**f) for f in d.get("failures", ())),
            cached=cached,
            how=how or ("cached" if cached else "full"),
            requested=() if cached else tuple(d.get("requested", ())),
            candidates=tuple(d.get("candidates", ())),
            flyte=dict(d.get("flyte") or {}),
            witness=d.get("witness", ""),
            distributions=tuple(d.get("distributions") or ()),
            witness_paths=_witness_paths(d.get("reads_witness")),
            reads=d["reads_witness"] if isinstance(d.get("reads_witness"), dict) else {},
        )

    def witness_for(self, files) -> str:
        """The key of what the modules of an import closure (`files`, relative
        to the root) read at import, with what only other modules read left
        out; the whole witness when the reads are not charged to modules."""
        from .discovery.reads import witness_for

        return witness_for(self.reads, files) or self.witness


def _witness_paths(reads) -> tuple[str, ...]:
    if not isinstance(reads, dict):
        return ()
    return tuple(sorted({p for k in ("files", "dirs") if isinstance(reads.get(k), dict) for p in reads[k]}))
