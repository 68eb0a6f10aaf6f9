"""Where and how to deploy: the backend's endpoint, project, domain and org,
and flyte's client settings (credentials never shown, logged or recorded)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from flyte_build.rule_api import UserError, flyte_config, key_of

from . import backend_settings
from .params import DeployParams


@dataclass(frozen=True)
class ControlPlane:
    endpoint: str
    insecure: bool
    project: str
    domain: str
    org: str | None = None
    force: bool = False
    timeout: float = 60.0  # each control-plane call; a server that accepts and never answers must not hang us
    # flyte's client settings (auth type, credentials, CA certificate...): never shown, logged or recorded
    client: dict = field(default_factory=dict, repr=False, compare=False)
    secrets: tuple = field(default=(), repr=False, compare=False)
    auth: str = ""  # the auth type and where it came from, for messages

    def state_dir(self) -> str:
        """Where (under the cache's state/) what was deployed to this backend is remembered."""
        return f"deploys/{key_of([self.endpoint, self.project, self.domain, self.org or ''])[:24]}"

    def params(self) -> dict:
        """What a deploy action declares of its backend (no credentials)."""
        return {"endpoint": self.endpoint, "insecure": self.insecure, "project": self.project, "domain": self.domain,
                "org": self.org, "force": self.force, "timeout": self.timeout}

    def secrets_for_run(self) -> dict:
        return {"client": self.client, "secrets": self.secrets, "auth": self.auth}

    @classmethod
    def of(cls, params: dict, secrets: dict) -> "ControlPlane":
        return cls(**params, client=dict(secrets.get("client") or {}), secrets=tuple(secrets.get("secrets") or ()),
                   auth=secrets.get("auth", ""))

    def backend(self):
        from flyte_build.rule_api import flyte_adapter as fa

        return fa.Backend(self.endpoint, self.insecure, self.timeout, client=self.client, secrets=self.secrets, auth=self.auth)


def control_plane(ws) -> ControlPlane:
    """Where and how to deploy: flyte's own configuration (found and read as the
    `flyte` CLI does), under the pyproject table and the flags (see backend_settings)."""
    from flyte_build.rule_api import flyte_adapter as fa

    ctx = ws.ctx
    given = ctx.view.run_params(DeployParams)
    ref = ws.flyte_ref
    loaded = flyte_config.load(ref)
    settings = {**backend_settings.effective(loaded, ctx.cfg, given), **flyte_config.effective(loaded, **ws.layers)}
    values = {k: v.value for k, v in settings.items()}
    if not values["endpoint"]:
        raise UserError("no Flyte endpoint: pass --endpoint, --config FILE, or set admin.endpoint in flyte's config.yaml "
                        f"(looked for it as `flyte` does; found: {ref.path or 'no config file'}) (or use --dry-run)")
    for k in ("project", "domain"):
        if not values[k]:
            raise UserError(f"no Flyte {k}: pass --{k} or set task.{k} in flyte's config.yaml")
    timeout = given.timeout or ctx.cfg.table("deploy").get("timeout", 60.0)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise UserError("Field tool.hatch.build.targets.flyte.deploy.timeout must be a positive number of seconds")
    if values["ca_cert_file_path"] and not os.path.isfile(values["ca_cert_file_path"]):
        raise UserError(f"CA certificate {values['ca_cert_file_path']} (from {settings['ca_cert_file_path'].source}) does not exist")
    secrets = tuple(v for v in (values["client_secret"], values["api_key"]) if v)
    auth = "none (insecure: flyte sends no credentials over plain HTTP)" if values["insecure"] else \
        f"{values['auth_type']} (from {settings['auth_type'].source})"
    return ControlPlane(values["endpoint"], bool(values["insecure"]), values["project"], values["domain"], values["org"],
                        bool(given.force), float(timeout), client=fa.client_kwargs(values), secrets=secrets, auth=auth)

