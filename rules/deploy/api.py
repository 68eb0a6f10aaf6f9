"""The Python API's `plan` and `deploy` verbs and the deploy's results
(flyte_build.plan, flyte_build.deploy, mirroring `flyte.deploy`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flyte_build import goal_api

from . import deployer
from .params import DeployParams
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
           auth_type: str | None = None, org: str | None = None, workspace=None, reporter=None, assume_deployed=(),
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
    given = DeployParams(version=version, force=force, check=check, endpoint=endpoint, insecure=insecure,
                         auth_type=auth_type, org=org)
    ws = workspace or goal_api.open_workspace(
        goal_api.settings_of(copy_style=copy_style, run_params=(given,), config=config, **settings))
    names = goal_api.env_names(ws, envs)
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


def plan(workspace_or_settings=None, *envs, version: str | None = None, **settings: Any) -> Plan:
    """The ordered deploy plan, computed offline: versions, images, bundle
    digests, task specs (`deploy(..., dry_run=True)` without its arguments for
    the backend). `workspace_or_settings`: a Workspace or Settings (else the
    keyword arguments are the run's settings); `version`: every task's."""
    if workspace_or_settings is not None:
        ws = goal_api.workspace_of(workspace_or_settings)
    else:
        ws = goal_api.open_workspace(goal_api.settings_of(run_params=(DeployParams(version=version),), **settings))
    return deployer.plan(ws, goal_api.env_names(ws, envs))
