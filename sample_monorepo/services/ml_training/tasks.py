"""ML training: fits a linear trend to a cleaned series (depends on preprocessing)."""

from __future__ import annotations

import flyte

from libs.common import stats
from libs.mlkit.model import fit_linear
from services.preprocessing.tasks import clean, preprocessing_env

# A task here calls a task of `preprocessing`, so this image carries every
# package the preprocessing image declares (six), plus its own.
ml_training_env = flyte.TaskEnvironment(
    name="ml_training",
    description="Fits linear trend models.",
    image=(
        flyte.Image.from_debian_base(python_version=(3, 11))
        .with_apt_packages("curl")
        .with_pip_packages("six==1.17.0", "toolz==1.0.0")
    ),
    resources=flyte.Resources(cpu="2", memory="2Gi"),
    env_vars={"TRAINING_PROFILE": "standard"},
    depends_on=[preprocessing_env],
)


def fit_series(values: list[float]) -> dict[str, float]:
    """Fit `values[i] ~ slope * i + intercept` and report the fit's RMSE."""
    xs = [float(i) for i in range(len(values))]
    model = fit_linear(xs, values)
    params = model.to_dict()
    params["rmse"] = round(stats.rmse(values, model.predict(xs)), 6)
    params["n"] = float(len(values))
    return params


@ml_training_env.task
async def train(values: list[float]) -> dict[str, float]:
    """Clean `values` (in the preprocessing env), then fit a linear trend."""
    cleaned = await clean(values)
    return fit_series(cleaned)
