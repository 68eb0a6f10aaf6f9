"""The CLI's commands, one module each with `add_parser(sub, parents)` and `run(args)`."""

COMMANDS = ["targets", "graph", "build", "explain", "deploy", "affected", "cache_cmd", "config_cmd"]
