"""The `flyte` builder: `hatch build -t flyte[:bundle,pex,image,plan]`.

Its versions come from the built-in rule set: one per kind whose rule makes
artifacts (`Rule.artifacts`), plus `plan` when the rule set offers that goal.
Each kind's version builds that kind of target for every environment, through the
same Workspace (config, discovery, rules, engine, cache) as `flyte-build
build`, so both agree on every digest and share every cache entry. The
artifacts land under the target's directory (default `dist/flyte/`) as
`<kind>/<env>-<sha256><ext>`, the layout `build --out` uses, beside `manifest.json`, which lists every target this run built (all
versions selected), and, for `plan`, `plan.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from hatchling.builders.plugin.interface import BuilderInterface

from ..engine import rulesets
from ..errors import BuildFailed, FlyteBuildError, UserError
from . import output
from .config import FlyteBuilderConfig


def artifact_kinds() -> list[str]:
    """The kinds a version builds: the built-in rules that make artifacts."""
    return [k for k, r in rulesets.builtin_rules().items() if r.artifacts]


def default_kinds() -> list[str]:
    return [k for k, r in rulesets.builtin_rules().items() if r.artifacts and r.default]


class FlyteBuilder(BuilderInterface):
    """Builds Flyte bundles, PEX files, image contexts and the deploy plan."""

    PLUGIN_NAME = "flyte"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ws = None
        # records of this run, across versions: the manifest describes the run,
        # not whatever an older run of other versions left behind
        self._records: dict[str, dict] = {}

    @classmethod
    def get_config_class(cls):
        return FlyteBuilderConfig

    def get_version_api(self) -> dict[str, Callable]:
        versions: dict[str, Callable] = {k: self._version(k) for k in artifact_kinds()}
        try:
            rulesets.api("plan")
        except AttributeError:
            return versions
        return {**versions, "plan": self.build_plan}

    def get_default_versions(self) -> list[str]:
        # the kinds `flyte-build build` builds by default; the others are opt-in
        return default_kinds()

    def clean(self, directory: str, versions: list[str]) -> None:
        # every version's outputs: `hatch clean -t flyte` must leave nothing behind
        self._guard(lambda: output.clean(Path(directory), set(artifact_kinds())))

    def _version(self, kind: str) -> Callable:
        def build(directory: str, **build_data: Any) -> str:
            return self._guard(lambda: self._build_kind(kind, Path(directory)))

        return build

    def build_plan(self, directory: str, **build_data: Any) -> str:
        return self._guard(lambda: self._write_plan(Path(directory)))

    # -- internals --

    def _workspace(self):
        if self._ws is None:
            self._ws = output.workspace(self.config.flyte, lambda m: self.app.display_warning(f"warning: {m}"))
        return self._ws

    def _build_kind(self, kind: str, directory: Path) -> str:
        ws = self._workspace()
        if kind not in ws.rules:
            raise UserError(
                f"`hatch build -t flyte:{kind}` needs a `{kind}` rule, and this flyte-build has none "
                f"(kinds: {', '.join(sorted(ws.rules))})"
            )
        directory = directory.resolve()
        results = output.build(ws, [f"{kind}:*"], directory, self.app.display_info)
        for r in results:
            self._records[r.target] = output.manifest_record(r, directory)
        return str(output.write_manifest(directory, self._records))

    def _write_plan(self, directory: str | Path) -> str:
        ws = self._workspace()
        plan = rulesets.api("plan")(ws)
        if not getattr(plan, "ok", True):  # plan.json holds every env or none
            bad = [*plan.failed, *plan.skipped]
            raise BuildFailed("the deploy plan is incomplete: " + "; ".join(f"`{n}`: {why}" for n, why in bad))
        doc = plan.to_json()
        path = output.write_json(Path(directory).resolve() / output.PLAN, doc)
        envs = doc.get("envs", []) if isinstance(doc, dict) else []
        self.app.display_info(f"plan: {len(envs)} environments in deploy order")
        return str(path)

    def _guard(self, fn: Callable[[], Any]) -> Any:
        # one clear line and hatch's exit status instead of a traceback
        try:
            return fn()
        except FlyteBuildError as exc:
            self.app.abort(f"flyte-build: error: {exc}", code=getattr(exc, "exit_code", 1))
            raise  # abort exits; this is for apps that do not
