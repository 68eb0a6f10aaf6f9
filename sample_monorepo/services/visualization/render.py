"""Rendering helpers; imported only inside `report_pipeline`'s body."""

from __future__ import annotations

import os
from pathlib import Path

from libs.common import stats, text

_SOURCE_ASSETS = Path(__file__).parent / "assets"


def assets_dir() -> Path:
    """The image's assets ($VIZ_ASSETS_DIR, i.e. /app/assets), else the source tree's."""
    configured = os.environ.get("VIZ_ASSETS_DIR")
    if configured and (Path(configured) / "template.txt").is_file():
        return Path(configured)
    return _SOURCE_ASSETS


def sparkline(values: list[float]) -> str:
    palette = (assets_dir() / "palette.txt").read_text(encoding="utf-8").rstrip("\r\n")
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(palette[round((v - lo) / span * (len(palette) - 1))] for v in values)


def report_line(title: str, params: dict[str, float], raw: list[float]) -> str:
    template = (assets_dir() / "template.txt").read_text(encoding="utf-8").strip()
    return template.format(
        title=title,
        n=int(params["n"]),
        fit=text.key_values(
            [(k, text.fmt_float(params[k])) for k in ("slope", "intercept", "rmse")]
        ),
        mean=text.fmt_float(stats.mean(raw)),
        spark=sparkline(raw),
    )
