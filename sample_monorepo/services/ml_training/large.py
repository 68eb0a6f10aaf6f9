"""The same training code on a bigger machine.

`clone_with` copies the image, env vars and `depends_on` (preprocessing) of
`ml_training`, but not its tasks: a clone starts with no tasks, so this
environment declares its own.
"""

from __future__ import annotations

import flyte

from services.ml_training.tasks import fit_series, ml_training_env
from services.preprocessing.tasks import clean

ml_training_large_env = ml_training_env.clone_with(
    name="ml_training_large",
    resources=flyte.Resources(cpu="4", memory="8Gi"),
    env_vars={"TRAINING_PROFILE": "large"},
    description="Fits linear trend models on large series.",
)


@ml_training_large_env.task
async def train_large(values: list[float]) -> dict[str, float]:
    """`train`, for series too big for the standard environment."""
    cleaned = await clean(values)
    return fit_series(cleaned)
