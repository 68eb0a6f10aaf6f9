"""What a rule is, and what it gets and returns. Rules import only this module.

A rule is a plain function of its declared inputs, in the manner of Pants'
backends: `inputs(env, view)` names the files, parameters and other targets the
action reads; the engine digests them into the action key; on a cache miss it
calls `run(request)` in a fresh work directory and stores what it produced. A
rule must not read anything it did not declare, or its key would lie, and the
API keeps that promise: `applies`, `deps`, `inputs` and `describe` get a
read-only `View` of the run (config, environments, run parameters, file
listings, import closures, digests, image references) and no store; `run` gets
only a `Request`: its declared files (with the digests the key was made of),
its params, its dependencies' results, a work directory and a log. Only the
engine writes the stores: a rule returns files it wrote in its work directory
and, when its effect lives outside the cache (a deploy), small state documents
(`Produced.state`) that the engine keeps and hands back (`Request.state`).

Rule sets are directories with a `register.py` whose `rules()` returns Rule
objects: the built-in set (`rules/` in the repository) is loaded exactly the
way a repository's own set (config key `rules`) is. A rule set that reads a
table of its own under `[tool.hatch.build.targets.flyte]` declares it there
too: `config_tables()` returns {name: ConfigTable}, checked like every table
(see `flyte_build.config.schema`; the checks below are its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .config import schema as checks  # noqa: F401 (string, boolean, choice, ... for ConfigTable keys)
from .config.schema import Table as ConfigTable  # noqa: F401
from .errors import BuildFailed, UserError  # noqa: F401 (a target's failure; bad input, exit 2)
from .hashing import as_digest, key_of, strip_digest  # noqa: F401 (canonical sha256 keys, "sha256:" digests)

if TYPE_CHECKING:
    from .engine.context import View
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
class UserCode:
    """How a rule runs the user's code in a child (`flyte_build.processes.children`): the
    project's interpreter and the run's deadline (config `discovery-timeout`)."""

    python: str
    timeout: float


@dataclass(frozen=True)
class Request:
    target: str
    env: "EnvSpec"
    files: tuple[FileInput, ...]
    params: dict
    deps: dict  # address -> TargetResult of each declared dependency
    workdir: Path
    log: Callable[[str], None]
    # the repository's root, for a tool that must run there (its files are the declared ones)
    root: Path | None = None
    # state(name) -> the document this rule last returned under `name` (Produced.state), or None
    state: Callable[[str], Any] = lambda name: None
    # credentials a goal gave this kind for the run: never in a key, a log or a store
    secrets: dict = field(default_factory=dict, repr=False, compare=False)
    # the interpreter and deadline of a child that imports the user's modules (never in a key)
    user_code: UserCode | None = None
    # this run's object of the rule's kind (`Rule.session`): its tools' memos, never in a key
    session: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Produced:
    """Files the action wrote in its work directory (output name, path), and metadata."""

    files: tuple[tuple[str, Path], ...] = ()
    meta: dict = field(default_factory=dict)
    # (name, JSON document): state the engine keeps for the rule (a relative name, e.g.
    # "deploys/<backend>/envs/<env>.json"); written only when `run` returns
    state: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Rule:
    kind: str
    version: str
    description: str
    inputs: Callable[["EnvSpec", "View"], Inputs]
    run: Callable[[Request], Produced]
    applies: Callable[["EnvSpec", "View"], bool] = lambda env, ctx: True
    # cheap: the targets this one depends on, without computing its inputs (for `graph`)
    deps: Callable[["EnvSpec", "View"], tuple[str, ...]] = lambda env, ctx: ()
    default: bool = False  # built by a plain `flyte-build build`
    # extra fields for `targets --json`, computed without building (e.g. an image's uri)
    describe: Callable[["EnvSpec", "View"], dict] | None = None
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
    # verify_shared(files, outputs) checks a shared entry's outputs ({name: path}) against
    # this reader's own inputs (the FileInputs its key was made of) and returns why they
    # are not what `run` would make of them, or None: only such a rule's shared results
    # are used unsigned (every other rule's need a verified signature, `needs_signature`
    # or not: see `engine.needs_signature`)
    verify_shared: Callable[[tuple[FileInput, ...], dict[str, Path]], str | None] | None = None
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
    # run several missing targets of this rule in one call (one tool process for all),
    # each Produced from its own Request alone; the engine still keys, looks up and
    # stores each target by itself; a BuildFailed in place of a Produced fails that
    # target alone (the others of the batch are stored)
    run_batch: Callable[[list[Request]], list[Produced]] | None = None
    # a step after the cacheable action whose effect lives outside the cache (pushing
    # an image to its registry), as Pants' publish goals follow a package:
    # deliver(req, meta) gets the action's request and its result's metadata (from
    # the cache or just built) and returns the fields the result gains (a "digest"
    # field becomes the result's digest). The engine runs it every run, hit or miss,
    # and never stores what it returns: it is checked where the effect lives
    deliver: Callable[[Request, dict], dict] | None = None
    # session() makes the kind's per-run object (e.g. the Docker client it detected and
    # its registry connections), once per engine run; the rule's steps get it as
    # `req.session`, so no memo outlives the run in the process
    session: Callable[[], Any] | None = None


def read_json(result) -> dict:
    """A dependency's main output (`Request.deps[address]`) as a JSON object: how a
    rule reads another kind's result, never through that kind's modules.
    BuildFailed naming the target when it is unreadable or not an object."""
    import json

    try:
        with open(result.path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, TypeError) as exc:
        raise BuildFailed(f"{result.target}: unreadable output ({exc}); run the build again") from None
    if not isinstance(doc, dict):
        raise BuildFailed(f"{result.target}: malformed output; run the build again")
    return doc


# -- the core's helpers a rule may use --------------------------------------
# Rules import the core only through this module (tests/test_layers.py holds
# it): these names are re-exported on purpose, each imported when a rule first
# asks for it, so loading a rule set (or `flyte-build --help`) stays cheap.
# name -> (module, attribute; None: the module itself)
HELPERS: dict[str, tuple[str, str | None]] = {
    # deterministic .tar.gz archives, and checking a downloaded one member by member
    "write_tar_gz": ("flyte_build.archives.tar_gz", "write_tar_gz"),
    "archive_mismatch": ("flyte_build.archives.check", "why_not"),
    # extracting an archive without links, devices or paths out of the destination
    "extract_all": ("flyte_build.archives.tarsafe", "extract_all"),
    # the secret filter bundles and build contexts share; whether a path stays under the root
    "drop_secrets": ("flyte_build.archives.bundle_files", "drop_secrets"),
    "secret_reason": ("flyte_build.archives.bundle_files", "secret_reason"),
    "inside": ("flyte_build.archives.bundle_files", "inside"),
    # object stores (s3://, gs://, az://, file://) for uploads a kind publishes
    "StoreOptions": ("flyte_build.config.settings", "StoreOptions"),
    "StoreUnavailable": ("flyte_build.stores.remote_stores", "StoreUnavailable"),
    "open_root": ("flyte_build.stores.remote_stores", "open_root"),
    # running the user's code: a child process in the project's interpreter, and
    # inside it discovery's set-up and imports (so a child sees what discovery saw)
    "children": ("flyte_build.processes.children", None),
    "atomic": ("flyte_build.atomic", None),
    "child_prepare": ("flyte_build.discovery.child", "prepare"),
    "child_import_candidates": ("flyte_build.discovery.child", "import_candidates"),
    # flyte itself, through the adapter (the one place that touches its private API)
    "flyte_adapter": ("flyte_build.flyte_adapter", None),
    "runtime_check": ("flyte_build.flyte_adapter.runtime_check", None),
    "auto_image_uri": ("flyte_build.flyte_adapter.serialization", "auto_image_uri"),
    # flyte's own config file: where it is, loading it, layering settings over it
    # (a kind that reads more of it than the core does: the deploy kind's backend)
    "flyte_config": ("flyte_build.flyte_config", None),
    # dependencies first, each once, ties by name; and in waves (the deploy order)
    "dependency_order": ("flyte_build.reach", "dependency_order"),
    "dependency_waves": ("flyte_build.reach", "dependency_waves"),
    # flyte-build's own version, for documents a kind writes (a plan's `tool`)
    "tool_version": ("flyte_build.__about__", "__version__"),
}


def __getattr__(name: str):
    if name not in HELPERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = HELPERS[name]
    found = importlib.import_module(module)
    return found if attr is None else getattr(found, attr)
