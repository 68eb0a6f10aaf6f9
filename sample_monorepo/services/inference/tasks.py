"""Inference: serves a fixed linear model (image resolved by name from the config)."""

from __future__ import annotations

import flyte

from libs.common import text
from libs.mlkit import serving

# "base" is resolved through `images` in [tool.hatch.build.targets.flyte].
inference_env = flyte.TaskEnvironment(
    name="inference",
    description="Batch predictions with the served model.",
    image=flyte.Image.from_ref_name("base"),
    resources=flyte.Resources(cpu="1", memory="1Gi"),
    env_vars={"MODEL_NAME": "linear-v1", "LOG_LEVEL": "INFO"},
)


@inference_env.task
async def predict(xs: list[float]) -> list[float]:
    """Predict one value per input with the served model."""
    return serving.predict_batch(serving.load_model(), xs)


@inference_env.task
async def describe_model() -> str:
    return text.key_values([(k, text.fmt_float(v)) for k, v in sorted(serving.load_model().to_dict().items())])
