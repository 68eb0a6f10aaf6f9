"""The Python API: `build`, `plan` and `deploy`, mirroring `flyte.deploy`.

Each returns plain frozen dataclasses. They run on the same Workspace as the
CLI, so they share its cache and agree with it on every digest and version.

    import flyte_build
    flyte_build.build("bundle:*", root_dir="sample_monorepo")
    p = flyte_build.plan(root_dir="sample_monorepo")          # offline
    flyte_build.deploy("visualization", dry_run=True, root_dir="sample_monorepo")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .rulesets import builtin as _builtin
from .workspace import Settings, Workspace


def __getattr__(name: str):
    # the plan's types are part of the API; they live with the deploy kind
    if name in ("EnvPlan", "Plan", "TaskPlan"):
        return getattr(_builtin("deploy.deployer"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Built:
    target: str
    kind: str
    env: str
    status: str
    digest: str | None
    path: str | None
    cached: bool
    error: str | None = None


@dataclass(frozen=True)
class BuildResult:
    targets: tuple[Built, ...]
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(t.status in ("built", "cached") for t in self.targets)


@dataclass(frozen=True)
class EnvDeploy:
    env: str
    status: str  # deployed | unchanged | failed | skipped
    version: str | None = None
    image: str | None = None
    bundle: str | None = None
    tasks: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class DeploySummary:
    envs: tuple[EnvDeploy, ...]  # in deploy order
    endpoint: str | None = None
    project: str | None = None
    domain: str | None = None
    warnings: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()  # dependencies assumed deployed: status `unchanged`, not contacted

    def _named(self, status: str) -> tuple[str, ...]:
        return tuple(e.env for e in self.envs if e.status == status)

    @property
    def deployed(self) -> tuple[str, ...]:
        return self._named("deployed")

    @property
    def unchanged(self) -> tuple[str, ...]:
        return self._named("unchanged")

    @property
    def failed(self) -> tuple[str, ...]:
        return self._named("failed")

    @property
    def skipped(self) -> tuple[str, ...]:
        return self._named("skipped")

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


def _settings(root_dir=None, copy_style=None, images=None, project=None, domain=None, version=None,
              cache_dir=None, cache=None, jobs=None, strict=None, sync_local_sys_paths=True, extra=None,
              config=None) -> Settings:
    return Settings(
        root_dir=str(root_dir) if root_dir else None, copy_style=copy_style, images=dict(images or {}),
        project=project, domain=domain, version=version, cache_dir=str(cache_dir) if cache_dir else None,
        cache=cache, jobs=jobs, strict=strict, sync_local_sys_paths=sync_local_sys_paths, extra=dict(extra or {}),
        flyte_config=str(config) if config else None,
    )


def _workspace(ws_or_settings) -> Workspace:
    if isinstance(ws_or_settings, Workspace):
        return ws_or_settings
    if isinstance(ws_or_settings, Settings):
        return Workspace(ws_or_settings)
    raise TypeError(f"expected a Workspace or Settings, got {type(ws_or_settings).__name__}")


def _env_names(ws: Workspace, envs) -> list[str] | None:
    """Env names from names, TaskEnvironment objects or `deploy:` patterns; None = the selection."""
    if not envs:
        return None
    names = []
    for e in envs:
        name = e if isinstance(e, str) else getattr(e, "name", None)
        if not isinstance(name, str):
            raise UserError(f"not an environment or its name: {e!r}")
        if ":" in name:
            names.extend(ws.graph.targets[a].env for a in ws.graph.select([name]))
            continue
        try:
            ws.ctx.env(name)
        except KeyError:
            known = ", ".join(sorted(x.name for x in ws.ctx.envs))
            raise UserError(f"no environment named `{name}`; environments: {known}") from None
        names.append(name)
    return list(dict.fromkeys(names))


def build(*targets: str, out: str | Path | None = None, workspace: Workspace | None = None, **settings: Any) -> BuildResult:
    """Build targets (patterns such as `bundle:*`; default: the default kinds)."""
    ws = workspace or Workspace(_settings(**settings))
    results = ws.build(list(targets), out=Path(out).resolve() if out else None)
    return BuildResult(
        tuple(Built(r.target, r.kind, r.env, r.status, r.digest, r.path, r.cached, r.error) for r in results),
        tuple(ws.all_warnings()),
    )


def plan(workspace_or_settings: Workspace | Settings | None = None, *envs, **settings: Any) -> Plan:
    """The ordered deploy plan, computed offline: versions, images, bundle digests, task specs."""
    ws = _workspace(workspace_or_settings) if workspace_or_settings is not None else Workspace(_settings(**settings))
    deployer = _builtin("deploy.deployer")

    return deployer.plan(ws, _env_names(ws, envs))


def deploy(*envs, dry_run: bool = False, version: str | None = None, interactive_mode: bool | None = None,
           copy_style: str | None = None, dryrun: bool | None = None,
           force: bool = False, endpoint: str | None = None, config: str | None = None, insecure: bool | None = None,
           auth_type: str | None = None, org: str | None = None, workspace: Workspace | None = None, reporter=None, assume_deployed=(),
           check: bool = True, **settings: Any) -> DeploySummary | Plan:
    """Deploy environments (names or TaskEnvironment objects; default: every
    discovered one) and their dependencies, dependencies first. With
    `dry_run=True`, returns the Plan and contacts nothing.

    The first arguments are `flyte.deploy`'s, with its meanings: `dry_run`
    (and its deprecated alias `dryrun`; either one true means a dry run),
    `version`, `interactive_mode` (True is refused, as flyte refuses it) and
    `copy_style`. Where flyte returns a list of `Deployment`s, this returns
    one plain `DeploySummary` (or the `Plan` of a dry run): BUILD.md says why.

    `assume_deployed`: env names not to deploy when they are only
    dependencies (`deploy --changed-since` passes the unaffected envs). Each
    is expected to be deployed already: the plan leaves it out (`left_out`),
    a real deploy resolves its image and bundle (its dependents pin them) and
    reports it `unchanged` without contacting the backend for it.

    `check=False` deploys without first running each env's `check:` target."""
    deployer = _builtin("deploy.deployer")

    if interactive_mode:
        raise NotImplementedError("Interactive mode not yet implemented for deployment (as in flyte.deploy)")
    dry_run = bool(dry_run or dryrun)
    extra = {"deploy": {"endpoint": endpoint, "insecure": insecure, "auth_type": auth_type, "org": org, "force": force,
                        "check": check}}
    ws = workspace or Workspace(_settings(copy_style=copy_style, version=version, extra=extra, config=config, **settings))
    names = _env_names(ws, envs)
    if dry_run:
        return deployer.plan(ws, names, reporter=reporter, assume_deployed=assume_deployed)
    results = deployer.deploy(ws, names, reporter=reporter, assume_deployed=assume_deployed)
    out = []
    for r in results:
        status = r.meta.get("action", "deployed") if r.ok else r.status
        out.append(EnvDeploy(r.env, status, r.meta.get("version"), r.meta.get("image"), r.meta.get("bundle"),
                             tuple(r.meta.get("tasks", ())), r.error))
    target = ws.ctx.options.extra.get("_deploy_target")
    return DeploySummary(tuple(out), getattr(target, "endpoint", None), getattr(target, "project", None),
                         getattr(target, "domain", None), tuple(ws.all_warnings()),
                         tuple(r.env for r in results if r.ok and r.meta.get("left_out")))
