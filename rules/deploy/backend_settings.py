"""The backend's settings: what of flyte's config file a deploy reads (the
endpoint, TLS, credentials and org), under the pyproject table's `deploy`
keys and the deploy flags, each with where it came from. The core reads the
same file for the project, domain and images (flyte_build.flyte_config);
`flyte-build config` shows both (this kind's rows through its registration)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from flyte_build.rule_api import UserError, flyte_config

from .params import DeployParams

# setting -> (pyproject key under the flyte-build table, command-line flag); None: not settable there
LAYERS = {
    "endpoint": ("deploy.endpoint", "--endpoint"),
    "insecure": ("deploy.insecure", "--insecure"),
    "insecure_skip_verify": (None, None),
    "ca_cert_file_path": ("deploy.ca-cert", None),
    "auth_type": ("deploy.auth-type", "--auth-type"),
    "client_id": (None, None),
    "client_secret": (None, None),
    "api_key": (None, None),
    "command": (None, None),
    "proxy_command": (None, None),
    "scopes": (None, None),
    "http_proxy_url": (None, None),
    "disable_keyring": (None, None),
    "org": ("deploy.org", "--org"),
}
SECRETS = ("client_secret", "api_key")


def given(run_params: tuple) -> DeployParams:
    """The caller's DeployParams among a run's parameters (defaults if none)."""
    return next((p for p in run_params if isinstance(p, DeployParams)), DeployParams())


def effective(loaded: dict, cfg, params: DeployParams) -> dict[str, flyte_config.Setting]:
    """The backend's settings: flyte's (`loaded`, from `flyte_config.load`), under
    the pyproject table `cfg` read (its `deploy` keys; a relative ca-cert is
    relative to pyproject.toml), under the flags in `params`."""
    d = cfg.table("deploy")
    ca = d.get("ca-cert")
    if ca and cfg.pyproject is not None and not os.path.isabs(ca):
        ca = str(Path(cfg.pyproject).parent / ca)
    table = {"deploy.endpoint": d.get("endpoint"), "deploy.insecure": d.get("insecure"), "deploy.org": d.get("org"),
             "deploy.auth-type": d.get("auth-type"), "deploy.ca-cert": ca}
    flags = {"endpoint": params.endpoint, "insecure": params.insecure, "auth_type": params.auth_type, "org": params.org}
    out = flyte_config.effective(loaded, table, flags, str(cfg.pyproject) if cfg.pyproject else None, dict(cfg.sources),
                                 layers=LAYERS, secrets=SECRETS)
    if out["auth_type"].value:
        from flyte_build.rule_api import flyte_adapter as fa

        try:
            out["auth_type"] = replace(out["auth_type"], value=fa.auth_type_name(out["auth_type"].value))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return out


def rows(loaded: dict, table_cfg, settings) -> dict[str, flyte_config.Setting]:
    """This kind's rows of `flyte-build config`'s flyte section (registration hook)."""
    return effective(loaded, table_cfg, given(settings.run_params))
