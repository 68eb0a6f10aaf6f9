"""The deploy kind's run parameters (see `View.run_params`): what a caller
gives a deploy (`flyte-build deploy`'s flags, `flyte_build.deploy`'s
arguments) and what the deploy goal resolves before it runs the deploy
targets. Both reach the plan and the rule by one route, the view."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DeployParams:
    """A caller's: `version` (every task's; default: a content key, see
    versions.env_version), `force` (redeploy unchanged envs), `check` (wait for
    each env's check: target), `timeout` (each control-plane call, seconds;
    default: config deploy.timeout, else 60) and the backend flags over flyte's
    config file (`endpoint`, `insecure`, `auth_type`, `org`; None: not given)."""

    version: str | None = None
    force: bool = False
    check: bool = True
    timeout: float | None = None
    endpoint: str | None = None
    insecure: bool | None = None
    auth_type: str | None = None
    org: str | None = None


@dataclass(frozen=True)
class DeployRun:
    """The deploy goal's, declared by every deploy target it runs: the backend
    (`ControlPlane.params()`, no credentials), each env's planned image
    reference, the envs left out (assumed deployed) and an app's git source link."""

    backend: dict = field(default_factory=dict)  # empty: not a deploy goal's run
    planned: dict = field(default_factory=dict)
    left_out: tuple[str, ...] = ()
    app_source: dict | None = None
