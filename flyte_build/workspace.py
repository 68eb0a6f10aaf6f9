"""One run's view of a repository: config, discovery, rules, graph and cache.

The CLI, the hatch plugin and the Python API all start here, so they share
one engine and one cache and agree on every digest.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import interpreter
from .config import settings as config_mod
from . import flyte_config
from .engine import rulesets
from .stores.two_tier_cache import Cache
from .engine.context import Context, Options
from .discovery.discover import Selection, discover
from .archives import check, check_helper
from .archives.artifact_copies import materialize
from .engine.executor import Engine, Reporter, TargetResult
from .errors import UserError
from .engine.graph import Graph
from .stores.file_digests import FileDigests
from .stores.local_store import LocalStore


@dataclass(frozen=True)
class Settings:
    """Everything a caller may set for a run; None means "from config, else default"."""

    root_dir: str | None = None
    selection: Selection = field(default_factory=Selection)
    copy_style: str | None = None
    images: dict = field(default_factory=dict)
    ignore_load_errors: bool | None = None
    cache: str | None = None
    cache_required: bool | None = None
    cache_read_only: bool | None = None
    discovery_timeout: float | None = None
    python: str | None = None  # --python: the project's interpreter (relative to the working directory)
    allow_secrets: tuple[str, ...] = ()  # added to config `allow-secrets`
    cache_dir: str | None = None
    storage: str | None = None
    project: str | None = None
    domain: str | None = None
    jobs: int | None = None
    strict: bool | None = None
    sync_local_sys_paths: bool = True
    flyte_config: str | None = None  # --config: flyte's config.yaml (default: flyte's own lookup)
    # the kinds' run parameters: frozen dataclasses each kind declares and its command
    # or Python API verb fills (e.g. the deploy kind's DeployParams); see View.run_params
    run_params: tuple = ()


class Workspace:
    def __init__(self, settings: Settings, cfg: config_mod.Config | None = None, warn=None, discovery_shared=None,
                 warm=None):
        """`discovery_shared`: a shared cache to consult for discovery only (the
        revision `affected` compares with: its results are never built). `warm`:
        a `discovery.warm.WarmDiscovery` (default: the one a resident process set, `warm.RESIDENT`;
        False: none, for a tree that is not the resident process's repository)."""
        self.settings = settings
        self.started = time.perf_counter()
        # outside any project, only files named on the command line are imported (as `flyte deploy FILE`)
        cfg = cfg or config_mod.load(settings.root_dir, require_project=not settings.selection.paths)
        table_cfg = cfg  # before the flags: `config` reports which layer set what
        cfg = with_flags(cfg, settings)
        # the rule sets first: they declare the config tables of their kinds, and
        # a bad key in any table is an error before anything is read or stored
        cfg, self.rules = rulesets.checked_config(cfg)
        if cfg.storage:
            from .stores.remote_stores import open_root

            # a bad URL is a bad setting: exit 2 before anything is built, not after every bundle
            # (opening makes no request; the upload reuses this process's root)
            open_root(cfg.storage, cfg.object_store, "--storage")
        self.cfg = cfg
        self.store = LocalStore(Path(settings.cache_dir) if settings.cache_dir else None)
        self.store.hold_for_build()  # `cache gc --max-age-days` waits for this run
        self.digests = FileDigests(self.store.root / "state", str(cfg.root))
        interpreter.ask_ahead(cfg, self.store.root)  # unless known: asked while the caches open, the tree is walked
        self.warnings: list[str] = []
        self._warn = warn or self.warnings.append
        from .stores.signing import load_verifier

        load_verifier(tuple(cfg.cache_verify_keys))  # a bad verify key is an error with or without a shared cache
        shared = None
        if cfg.cache:
            from .stores.shared_cache import open_shared

            shared = open_shared(cfg.cache, cfg, self._warn)
        self.cache = Cache(self.store, shared)
        self.notes = _cache_notes(cfg, shared)  # the CLI says each once on stderr
        self.flyte_ref = flyte_config.locate(cfg.flyte_config)  # flyte's config file this run reads
        self.discovery = discover(cfg, settings.selection, self.store, self.digests,
                                  shared=shared or discovery_shared, stats=self.cache.stats, flyte_ref=self.flyte_ref,
                                  warm=None if warm is False else warm if warm is not None else _resident_warm())
        # the pyproject and flag layers over flyte's config file (a goal reading
        # that file itself puts them over what it reads: see flyte_config.effective)
        self.layers = flyte_config.layers(table_cfg, settings)
        self.cfg = cfg = _with_flyte_settings(cfg, self.discovery.flyte, self.layers)
        for f in self.discovery.failures:
            self._warn(f"skipped {f.file}: {f.message}")
        if not self.discovery.envs:
            # nothing to build is a mistake in the selection or the repository, not a success
            raise UserError(f"no TaskEnvironment found under {cfg.root} (selection: {settings.selection.describe() or 'everything'})")
        self.options = Options(
            images=dict(settings.images),
            strict=cfg.strict,
            sync_local_sys_paths=settings.sync_local_sys_paths,
            run_params=tuple(settings.run_params),
        )
        self.ctx = Context(cfg, self.discovery, self.store, self.digests, self.options, rules=self.rules)
        self.graph = Graph(self.ctx, self.rules)
        self.storage_stats = {"uploads": 0, "present": 0, "bytes_up": 0}

    def engine(self, reporter: Reporter | None = None, jobs: int | None = None, params: tuple = (),
               secrets: dict | None = None, fail_alone: bool = False) -> Engine:
        """`params`, `secrets`, `fail_alone`: a goal's run parameters, credentials per kind and
        whether a target's input error fails it alone (see Engine)."""
        return Engine(self.ctx, self.graph, self.cache, reporter, jobs or self.cfg.jobs, params, secrets, fail_alone)

    def build(self, patterns: list[str] | None = None, reporter: Reporter | None = None, out: Path | None = None, jobs: int | None = None,
              fail_alone: bool = False) -> list[TargetResult]:
        effects = tuple(k for k, r in self.rules.items() if not r.cacheable)  # deploys have their own command
        addresses = self.graph.select(list(patterns or []), exclude_kinds=effects)
        from .stores import build_manifest

        helper = _check_helper(self.cache, jobs or self.cfg.jobs)
        try:
            had = build_manifest.prefetch(self, addresses)  # a fresh machine: every entry in one read
            results = self.engine(reporter, jobs, fail_alone=fail_alone).run(addresses)
        finally:
            if helper is not None:
                check.HELPER = None
                helper.stop()
        build_manifest.settle(self)
        build_manifest.publish(self, addresses, results, had)
        wanted = set(addresses)
        results = [r for r in results if r.target in wanted] + [r for r in results if r.target not in wanted]
        if self.cfg.storage:
            results = self.publish(results)
        if out is not None:
            results = materialize(results, self.store, out)
        self.save_run_stats(results)
        return results

    def publish(self, results: list[TargetResult]) -> list[TargetResult]:
        """Hand each built result whose rule publishes (a bundle) to its rule's
        `publish` with `storage`; its record gains what the rule returns
        (`remote`, and `uploaded`: False when the store had it already)."""
        from concurrent.futures import ThreadPoolExecutor

        def one(r: TargetResult) -> TargetResult:
            rule = self.rules.get(r.kind)
            if not (rule is not None and rule.publish is not None and r.ok and r.outputs):
                return r
            main = r.outputs[0]
            fields = rule.publish(self.cfg.storage, self.store.blob_path(main.digest), main.digest, self.cfg.object_store)
            return replace(r, meta={**r.meta, **fields})

        # each upload is mostly a round trip (a HEAD, maybe a PUT): overlap them
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.jobs)) as pool:
            out = list(pool.map(one, results))
        for r in out:
            if "uploaded" in r.meta:
                self.storage_stats["uploads" if r.meta["uploaded"] else "present"] += 1
                self.storage_stats["bytes_up"] += (r.size or 0) if r.meta["uploaded"] else 0
        return out

    def all_warnings(self) -> list[str]:
        return list(dict.fromkeys([*self.warnings, *self.ctx.warnings, *self.cache.stats.warnings]))

    def save_run_stats(self, results: list[TargetResult]) -> None:
        stats = self.cache.stats_json()
        stats.update(
            built=sum(r.status == "built" for r in results),
            cached=sum(r.status == "cached" for r in results),
            failed=sum(r.status == "failed" for r in results),
            seconds=round(time.perf_counter() - self.started, 3),
            root=str(self.cfg.root),
            shared=self.cfg.cache,
            storage=dict(self.storage_stats, url=self.cfg.storage) if self.cfg.storage else None,
        )
        try:
            self.store.write_json("state/last-run.json", stats)
        except OSError:
            pass


def _check_helper(cache: Cache, jobs: int):
    """A second process for the shared bundles' checks (`archives.check_helper`),
    when a shared cache may hand this build bundles and two threads run."""
    if cache.shared is None or jobs < 2 or check.HELPER is not None:
        return None
    check.HELPER = check_helper.start(check.why_not_here)
    return check.HELPER


def _cache_notes(cfg: config_mod.Config, shared) -> list[str]:
    """A laptop beside CI reads the shared cache and, by default, never writes it: say so."""
    from .stores.shared_cache import read_only_reason

    why = read_only_reason(cfg.cache_read_only, shared.signer, shared.verifier) if shared is not None else None
    if why is None:
        return []
    return [f"the shared cache {cfg.cache} is read only for this run ({why}): nothing built here is published "
            "to it; to publish, pass --cache-write (or set cache-read-only = false), or run in CI or with a signing key"]


def with_flags(cfg: config_mod.Config, settings: Settings) -> config_mod.Config:
    """The pyproject table's settings with the run's flags over them."""
    if settings.copy_style is not None and settings.copy_style not in config_mod.COPY_STYLES:
        raise UserError(f"--copy-style must be one of: {', '.join(config_mod.COPY_STYLES)}")
    cfg = cfg.with_overrides(
        copy_style=settings.copy_style,
        ignore_load_errors=settings.ignore_load_errors,
        cache=settings.cache,
        cache_required=settings.cache_required,
        cache_read_only=settings.cache_read_only,
        discovery_timeout=settings.discovery_timeout,
        storage=settings.storage,
        project=settings.project,
        domain=settings.domain,
        jobs=settings.jobs,
        strict=settings.strict,
        flyte_config=settings.flyte_config,
    )
    if settings.python:
        cfg = replace(cfg, python=os.path.abspath(settings.python), python_source="--python")
    if settings.allow_secrets:
        cfg = replace(cfg, allow_secrets=tuple(dict.fromkeys([*cfg.allow_secrets, *settings.allow_secrets])))
    if settings.copy_style is not None:
        # a flag overrides per-env overrides too, as `flyte deploy --copy-style` would
        cfg = replace(cfg, envs={k: replace(v, copy_style=None) for k, v in cfg.envs.items()})
    return cfg


def _with_flyte_settings(cfg: config_mod.Config, flyte_read, layers: dict) -> config_mod.Config:
    """One configuration with flyte: its config file's project, domain and image
    settings under the pyproject table and the flags (see flyte_config.effective)."""
    flyte_layer = flyte_config.checked_layer(flyte_read)
    eff = flyte_config.effective(flyte_layer, **layers)
    return replace(
        cfg, project=eff["project"].value, domain=eff["domain"].value, registry=eff["image_registry"].value,
        images={**(flyte_layer.get("image_refs", {}).get("value") or {}), **cfg.images},
    )


def _resident_warm():
    """The warm discovery a resident process set for its commands (None outside one)."""
    from .discovery import warm

    return warm.RESIDENT
