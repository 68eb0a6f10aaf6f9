"""Reporting: summarises a series using a config file read at run time.

`config/report.json` is data, not a module: `loaded_modules` bundles would
miss it, which is why pyproject.toml sets `copy-style = "all"` for this env.
The image comes from the Dockerfile beside this file; `.dockerignore` keeps
the build context down to what the Dockerfile needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import flyte

from libs.common import stats, text

CONFIG_PATH = Path(__file__).parent / "config" / "report.json"

reporting_env = flyte.TaskEnvironment(
    name="reporting",
    description="Formats summary reports from a config file.",
    image=flyte.Image.from_dockerfile(
        Path(__file__).parent / "Dockerfile",
        registry="127.0.0.1:5000/flyte-build",
        name="reporting",
    ),
    env_vars={"REPORT_LOCALE": "en"},
)


def load_config() -> dict:
    return json.loads(CONFIG_PATH.read_text(encoding="utf-8"))


@reporting_env.task
async def summarize(values: list[float]) -> str:
    """One line: the configured title, then the configured statistics."""
    config = load_config()
    precision = int(config["precision"])
    available = {
        "count": str(len(values)),
        "mean": text.fmt_float(stats.mean(values), precision),
        "stdev": text.fmt_float(stats.stdev(values), precision),
        "min": text.fmt_float(min(values), precision),
        "max": text.fmt_float(max(values), precision),
    }
    fields = [(name, available[name]) for name in config["fields"]]
    return f"{config['title']} ({config['owner']}): {text.key_values(fields)}"


@reporting_env.task
async def report_title() -> str:
    """The report title, straight from the config file."""
    return load_config()["title"]
