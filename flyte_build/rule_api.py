"""What a rule is, and what it gets and returns. Rules import only this module.

A rule is a plain function of its declared inputs, in the manner of Pants'
backends: `inputs(env, ctx)` names the files, parameters and other targets the
action reads; the engine digests them into the action key; on a cache miss it
calls `run(request)` in a fresh work directory and stores what it produced. A
rule must not read anything it did not declare, or its key would lie.

Rule sets are directories with a `register.py` whose `rules()` returns Rule
objects: the built-in set (`rules/` in the repository) is loaded exactly the
way a repository's own set (config key `rules`) is. A rule set that reads a
table of its own under `[tool.hatch.build.targets.flyte]` declares it there
too: `config_tables()` returns {name: ConfigTable}, checked like every table
(see `flyte_build.config_schema`; the checks below are its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import config_schema as checks  # noqa: F401 (string, boolean, choice, ... for ConfigTable keys)
from .config_schema import Table as ConfigTable  # noqa: F401

if TYPE_CHECKING:
    from .context import Context
    from .model import EnvSpec


@dataclass(frozen=True)
class Inputs:
    """What one action reads: files (name, absolute path), JSON-able params, other targets."""

    files: tuple[tuple[str, str], ...] = ()
    params: dict = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileInput:
    name: str
    path: str
    digest: str  # hex sha256 the key was computed from


@dataclass(frozen=True)
class Request:
    target: str
    env: "EnvSpec"
    files: tuple[FileInput, ...]
    params: dict
    deps: dict  # address -> TargetResult of each declared dependency
    ctx: "Context"
    workdir: Path
    log: Callable[[str], None]


@dataclass(frozen=True)
class Produced:
    """Files the action wrote in its work directory (output name, path), and metadata."""

    files: tuple[tuple[str, Path], ...] = ()
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    kind: str
    version: str
    description: str
    inputs: Callable[["EnvSpec", "Context"], Inputs]
    run: Callable[[Request], Produced]
    applies: Callable[["EnvSpec", "Context"], bool] = lambda env, ctx: True
    # cheap: the targets this one depends on, without computing its inputs (for `graph`)
    deps: Callable[["EnvSpec", "Context"], tuple[str, ...]] = lambda env, ctx: ()
    default: bool = False  # built by a plain `flyte-build build`
    # extra fields for `targets --json`, computed without building (e.g. an image's uri)
    describe: Callable[["EnvSpec", "Context"], dict] | None = None
    # rules whose result lives outside the cache (a registry, a backend) may check it there
    remote_check: Callable[[Request], Any] | None = None
    # False for actions whose effect lives outside the cache (a deploy): run every time,
    # never recorded as a cache entry; the rule keeps its own state
    cacheable: bool = True
    # the output names a cache entry of this rule may have (each tuple one allowed
    # shape); an entry of another shape is refused as malformed. None: any.
    outputs: tuple[tuple[str, ...], ...] | None = None
    # True when the result's metadata reaches a deploy (an image's pin): a shared
    # cache entry is used only when signed and verified, never on a writer's word
    needs_signature: bool = False
    # its outputs are build artifacts: hatch's `flyte` builder offers a version
    # (`hatch build -t flyte:KIND`) and a folder under its directory for the kind
    artifacts: bool = False
    # its results depend on nothing outside the cache: a no-op `build --json` of
    # only such targets may be answered from the whole-build snapshot
    replayable: bool = False
    # with config `storage` set, after a build: publish(url, blob path, hex sha256,
    # object store options) uploads the result's main output and returns the
    # fields its record gains (e.g. `remote`, `uploaded`)
    publish: Callable[[str, Path, str, Any], dict] | None = None
