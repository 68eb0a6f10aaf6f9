"""Text helpers shared by several services."""

from __future__ import annotations

import re

_NON_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(value: str) -> str:
    """Lower-case `value` and join its alphanumeric runs with dashes."""
    return _NON_SLUG.sub("-", value.lower()).strip("-")


def fmt_float(value: float, precision: int = 3) -> str:
    """Format a float with a fixed number of decimals and no negative zero."""
    text = f"{value:.{precision}f}"
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    return text


def key_values(pairs: list[tuple[str, str]], sep: str = " ") -> str:
    """Render `[("a", "1"), ("b", "2")]` as `a=1 b=2`."""
    return sep.join(f"{k}={v}" for k, v in pairs)


def banner(title: str, width: int = 40, fill: str = "=") -> str:
    """Center `title` in a line of `width` characters padded with `fill`."""
    return f" {title} ".center(width, fill)
