"""Ship rules/ inside the wheel as flyte_build/_builtin_rules.

Only for regular wheels: an editable install maps `flyte_build` to the source
tree (dev-mode-exact), where the engine finds ../rules by itself, and a
forced directory under site-packages/flyte_build would shadow that mapping.
"""

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        if self.target_name == "wheel" and version == "standard":
            build_data["force_include"]["rules"] = "flyte_build/_builtin_rules"
