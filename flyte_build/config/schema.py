"""The configuration schema: every table of `[tool.hatch.build.targets.flyte]`
declared as plain data (table -> key -> check), and one function that checks a
TOML table against it.

A check is `check(field, value) -> value`: it returns the value to keep (a
table of strings comes back sorted) or raises a `UserError` naming the full
TOML field. A key whose value is itself a table maps to a nested `Table`. An
unknown key anywhere is an error naming the file, the full key and every valid
key, as hatchling's config classes do.

The tables that belong to one target kind (`docker`, `pex`, `deploy`) are
declared by that kind's rule set: its `register.py` may define
`config_tables()` returning {name: Table}, and the workspace checks those
tables once the rule sets are loaded (see `config.with_rule_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

from ..errors import UserError

Check = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Table:
    """One TOML table. `keys` maps each key to its check or nested Table;
    `each`, for a table keyed by user names (`envs.<env>`), is the Table every
    value must match; `passthrough` keys belong to another tool (hatch's own
    target options) and are left alone; `hint` is added to unknown-key errors."""

    keys: Mapping[str, Union[Check, "Table"]] = field(default_factory=dict)
    each: "Table | None" = None
    passthrough: frozenset = frozenset()
    hint: str = ""
    what: str = "a table"  # for "Field X must be <what>"


def unknown_key(field_: str, key: str, valid, file=None, hint: str = "") -> UserError:
    where = f" in {file}" if file else ""
    more = f" ({hint})" if hint else ""
    return UserError(f"Unknown field {field_}.{key}{where}; valid fields: {', '.join(sorted(valid))}{more}")


def check(table: Table, field_: str, value: Any, file=None) -> dict:
    """The checked values of `value` (a TOML table at `field_`); keys left out stay out."""
    if not isinstance(value, dict):
        raise UserError(f"Field {field_} must be {table.what}")
    if table.each is not None:
        return {name: check(table.each, f"{field_}.{name}", v, file) for name, v in sorted(value.items())}
    out = {}
    for key, v in value.items():
        if key in table.passthrough:
            continue
        rule = table.keys.get(key)
        if rule is None:
            raise unknown_key(field_, key, table.keys, file, table.hint)
        out[key] = check(rule, f"{field_}.{key}", v, file) if isinstance(rule, Table) else rule(f"{field_}.{key}", v)
    return out


# -- the checks every table uses -------------------------------------------------


def string(field_: str, v: Any) -> str:
    if not isinstance(v, str):
        raise UserError(f"Field {field_} must be a string")
    return v


def nonempty_string(field_: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise UserError(f"Field {field_} must be a non-empty string")
    return v


def boolean(field_: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise UserError(f"Field {field_} must be a boolean")
    return v


def positive_int(field_: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise UserError(f"Field {field_} must be a positive integer")
    return v


def seconds(field_: str, v: Any) -> float:
    # nan fails `> 0`; inf would be no deadline at all
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v == float("inf"):
        raise UserError(f"Field {field_} must be a positive, finite number of seconds")
    return float(v)


def strings(field_: str, v: Any) -> tuple[str, ...]:
    # a tuple is what this check returns: a table checked twice passes twice
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise UserError(f"Field {field_} must be an array of strings")
    return tuple(v)


def string_table(field_: str, v: Any) -> dict[str, str]:
    """A table of user-named strings (`images`, `build-args`)."""
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise UserError(f"Field {field_} must be a table of strings")
    return dict(sorted(v.items()))


def choice(*allowed: str) -> Check:
    def check_choice(field_: str, v: Any) -> str:
        if v not in allowed:
            raise UserError(f"Field {field_} must be one of: {', '.join(allowed)}")
        return v

    return check_choice
