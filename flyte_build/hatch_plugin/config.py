"""The config classes: hatch's view of `[tool.hatch.build.targets.flyte]` and of
the build hook's table.

The Flyte settings themselves go through `flyte_build.config.settings.from_table`, the
very function the CLI uses, so both read one table with one set of errors
(`Field tool.hatch.build.targets.flyte.copy-style must be one of: ...`).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from hatchling.builders.config import BuilderConfig

from ..config import settings as flyte_config
from ..config import schema as schema
from ..config.schema import Table
from ..errors import UserError

# Where the target writes when neither its own nor hatch's `directory` says
# otherwise: a folder of its own, so `hatch clean -t flyte` never meets a wheel.
SUBDIRECTORY = "flyte"


class FlyteBuilderConfig(BuilderConfig):
    @cached_property
    def directory(self) -> str:
        if "directory" in self.target_config:
            return super().directory
        # hatch's shared `tool.hatch.build.directory` (default `dist`) plus our folder
        return os.path.join(super().directory, SUBDIRECTORY)

    @cached_property
    def flyte(self) -> flyte_config.Config:
        """The validated Flyte settings; raises UserError naming the bad field."""
        return flyte_settings(self.root, self.target_config)


def flyte_settings(root: str, table: dict[str, Any] | None = None) -> flyte_config.Config:
    """`table`: hatch's target table as hatch hands it over; `[tool.flyte-build]`
    merges with it as it does for the CLI (a key in both must agree)."""
    pyproject = Path(root) / "pyproject.toml"
    if not pyproject.is_file():
        return flyte_config.from_table(table or {}, Path(root), None)
    merged, sources = flyte_config.read_tables(pyproject, table)
    return flyte_config.from_table(merged, Path(root), pyproject, sources)


HOOK_GENERIC_KEYS = frozenset({"dependencies", "require-runtime-dependencies", "require-runtime-features", "enable-by-default"})


def _target_patterns(field_: str, v: Any) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(t, str) for t in v):
        raise UserError(f"Field {field_} must be a non-empty array of target patterns (e.g. \"bundle:*\")")
    return v


class HookConfig:
    """`[tool.hatch.build.hooks.flyte]` (or `...targets.<t>.hooks.flyte]`):

    - `targets`: the target patterns to build (default `["bundle:*"]`);
    - `directory`: where the artifacts and `manifest.json` go (default: the
      `flyte` target's directory, `dist/flyte`).
    """

    TABLE = Table(keys={"directory": schema.string, "targets": _target_patterns}, passthrough=HOOK_GENERIC_KEYS)

    def __init__(self, table: dict[str, Any], location: str):
        self.location = location
        from .builder import default_kinds

        checked = schema.check(self.TABLE, location, table)
        self.targets: list[str] = checked.get("targets", [f"{k}:*" for k in default_kinds()])
        self.directory: str | None = checked.get("directory")
