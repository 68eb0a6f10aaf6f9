"""The Python API: `build` here, and the goals the kinds register (the deploy
kind's `plan` and `deploy`, mirroring `flyte.deploy`; rules/deploy/api.py).

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
from .engine import rulesets
from .workspace import Settings, Workspace


def __getattr__(name: str):
    # `plan`, `deploy` and their result types come from the kind that plans and
    # deploys (its register.py `api()`)
    try:
        return rulesets.api(name)
    except AttributeError:
        pass
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


def settings_of(root_dir=None, copy_style=None, images=None, project=None, domain=None,
                cache_dir=None, cache=None, jobs=None, strict=None, sync_local_sys_paths=True, run_params=(),
                config=None) -> Settings:
    """A run's Settings from the Python API's keyword arguments (`run_params`: the
    kinds' typed parameters, filled by a kind's own verb, e.g. `deploy`)."""
    return Settings(
        root_dir=str(root_dir) if root_dir else None, copy_style=copy_style, images=dict(images or {}),
        project=project, domain=domain, cache_dir=str(cache_dir) if cache_dir else None,
        cache=cache, jobs=jobs, strict=strict, sync_local_sys_paths=sync_local_sys_paths, run_params=tuple(run_params),
        flyte_config=str(config) if config else None,
    )


def workspace_of(ws_or_settings) -> Workspace:
    if isinstance(ws_or_settings, Workspace):
        return ws_or_settings
    if isinstance(ws_or_settings, Settings):
        return Workspace(ws_or_settings)
    raise TypeError(f"expected a Workspace or Settings, got {type(ws_or_settings).__name__}")


def env_names(ws: Workspace, envs) -> list[str] | None:
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
    ws = workspace or Workspace(settings_of(**settings))
    results = ws.build(list(targets), out=Path(out).resolve() if out else None)
    return BuildResult(
        tuple(Built(r.target, r.kind, r.env, r.status, r.digest, r.path, r.cached, r.error) for r in results),
        tuple(ws.all_warnings()),
    )

