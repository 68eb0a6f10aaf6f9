"""The CLI's commands, one module each with `add_parser(sub, parents)` and `run(args)`.

The rule sets add their own (the built-in set's `deploy`): see `rulesets.commands`.
"""

COMMANDS = ["targets", "graph", "build", "watch", "explain", "affected", "cache_cmd", "config_cmd", "daemon_cmd"]
