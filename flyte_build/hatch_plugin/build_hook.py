"""The `flyte` build hook: Flyte artifacts built in the same `hatch build` as a
wheel or sdist, and their manifest shipped inside it.

Enable it for every target with `[tool.hatch.build.hooks.flyte]`, or for one
with `[tool.hatch.build.targets.wheel.hooks.flyte]`. The manifest goes into the
wheel as `<name>.dist-info/extra_metadata/flyte/manifest.json` (readable with
`importlib.metadata`) and into the sdist as `flyte-manifest.json`; it is the
same file, byte for byte, as `manifest.json` beside the artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

from ..errors import FlyteBuildError
from . import output
from .config import SUBDIRECTORY, HookConfig, flyte_settings

WHEEL_PATH = "flyte/manifest.json"  # under <dist-info>/extra_metadata/
SDIST_PATH = "flyte-manifest.json"


class FlyteBuildHook(BuildHookInterface):
    PLUGIN_NAME = "flyte"

    def _location(self) -> str:
        # name the table the user actually wrote, so errors point at it
        if self.PLUGIN_NAME in self.build_config.target_config.get("hooks", {}):
            return f"tool.hatch.build.targets.{self.target_name}.hooks.{self.PLUGIN_NAME}"
        return f"tool.hatch.build.hooks.{self.PLUGIN_NAME}"

    def _directory(self, hook: HookConfig) -> Path:
        if hook.directory:
            return (Path(self.root) / hook.directory).resolve()
        # the `flyte` builder's default: <hatch build directory>/flyte
        return (Path(self.directory) / SUBDIRECTORY).resolve()

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name not in ("wheel", "sdist") or version == "editable":
            return  # an editable install should not build Flyte artifacts
        carried = Path(self.root) / SDIST_PATH
        if self.target_name == "wheel" and carried.is_file() and (Path(self.root) / "PKG-INFO").is_file():
            # a wheel built from our own sdist (`pip install x.tar.gz`): ship the
            # manifest the sdist carries, which names the artifacts CI built,
            # rather than rebuilding (and importing user code) on install
            build_data["extra_metadata"][str(carried)] = WHEEL_PATH
            return
        try:
            hook = HookConfig(self.config, self._location())
            cfg = flyte_settings(self.root)
            directory = self._directory(hook)
            self.app.display_info(f"flyte: building {', '.join(hook.targets)} into {directory}")
            ws = output.workspace(cfg, lambda m: self.app.display_warning(f"warning: {m}"))
            results = output.build(ws, hook.targets, directory, self.app.display_info)
        except FlyteBuildError as exc:
            self.app.abort(f"flyte-build: error: {exc}", code=getattr(exc, "exit_code", 1))
            raise
        records = {r.target: output.manifest_record(r, directory) for r in results}
        manifest = output.write_manifest(directory, records)
        if self.target_name == "wheel":
            build_data["extra_metadata"][str(manifest)] = WHEEL_PATH
        else:
            build_data["force_include"][str(manifest)] = SDIST_PATH

    def clean(self, versions: list[str]) -> None:
        try:
            hook = HookConfig(self.config, self._location())
        except FlyteBuildError as exc:
            self.app.abort(f"flyte-build: error: {exc}", code=exc.exit_code)
            raise
        from .builder import artifact_kinds

        output.clean(self._directory(hook), set(artifact_kinds()))
