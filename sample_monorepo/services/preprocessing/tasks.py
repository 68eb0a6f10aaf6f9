"""Preprocessing: turns raw measurements into clean series (first env of the chain)."""

from __future__ import annotations

import flyte

from libs.common import stats

# Value range a sensor can report; anything outside is a glitch.
VALID_RANGE = (0.0, 100.0)

preprocessing_env = flyte.TaskEnvironment(
    name="preprocessing",
    description="Cleans raw measurement series.",
    image=flyte.Image.from_debian_base(python_version=(3, 11)).with_pip_packages("six==1.17.0"),
    resources=flyte.Resources(cpu="1", memory="512Mi"),
)


def synthetic_series(n: int) -> list[float]:
    """A deterministic noisy line `y = 2x + 1` with one negative glitch at index 2."""
    values = [2.0 * i + 1.0 + ((i % 3) - 1) * 0.5 for i in range(n)]
    if n > 2:
        values[2] = -7.0
    return values


@preprocessing_env.task
async def clean(values: list[float]) -> list[float]:
    """Drop NaN/inf values and clip the rest to the valid range."""
    lo, hi = VALID_RANGE
    return [round(v, 6) for v in stats.clip(stats.drop_invalid(values), lo, hi)]


@preprocessing_env.task
async def make_series(n: int) -> list[float]:
    """Generate the raw series the pipeline works on."""
    return synthetic_series(n)
