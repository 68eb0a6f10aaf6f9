"""The Python API's `deploy` verb and its results (flyte_build.deploy, mirroring `flyte.deploy`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flyte_build.api import _env_names, _settings
from flyte_build.workspace import Workspace

from . import deployer
from .plan import Plan


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
    if interactive_mode:
        raise NotImplementedError("Interactive mode not yet implemented for deployment (as in flyte.deploy)")
    dry_run = bool(dry_run or dryrun)
    extra = {"deploy": {"endpoint": endpoint, "insecure": insecure, "auth_type": auth_type, "org": org, "force": force,
                        "check": check}}
    ws = workspace or Workspace(_settings(copy_style=copy_style, version=version, extra=extra, config=config, **settings))
    names = _env_names(ws, envs)
    if dry_run:
        return deployer.plan(ws, names, reporter=reporter, assume_deployed=assume_deployed)
    results, backend = deployer.deploy(ws, names, reporter=reporter, assume_deployed=assume_deployed)
    out = []
    for r in results:
        status = r.meta.get("action", "deployed") if r.ok else r.status
        out.append(EnvDeploy(r.env, status, r.meta.get("version"), r.meta.get("image"), r.meta.get("bundle"),
                             tuple(r.meta.get("tasks", ())), r.error))
    return DeploySummary(tuple(out), backend.endpoint, backend.project, backend.domain, tuple(ws.all_warnings()),
                         tuple(r.env for r in results if r.ok and r.meta.get("left_out")))
