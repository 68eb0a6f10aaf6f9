"""flyte-build's built-in rule set: one module per target kind, listed in register.py.

Installed as `flyte_build._builtin_rules`; loaded by path like a repository's
own rule set (see flyte_build/engine/rulesets.py).
"""
