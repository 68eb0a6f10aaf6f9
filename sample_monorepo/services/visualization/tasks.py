"""Visualization: the top of the chain preprocessing -> ml_training -> visualization."""

from __future__ import annotations

from pathlib import Path

import flyte

from libs.common import text
from services.ml_training.tasks import ml_training_env, train
from services.preprocessing.tasks import make_series

ASSETS_DIR = Path(__file__).parent / "assets"

# Calls ml_training's and preprocessing's tasks, so the image carries their
# packages too. The assets folder is baked into the image at /app/assets.
visualization_env = flyte.TaskEnvironment(
    name="visualization",
    description="Renders one-line reports of trained models.",
    image=(
        flyte.Image.from_debian_base(python_version=(3, 11))
        .with_apt_packages("curl")
        .with_pip_packages("six==1.17.0", "toolz==1.0.0", "tabulate==0.9.0")
        .with_source_folder(ASSETS_DIR, dst="/app/assets", copy_contents_only=True)
    ),
    env_vars={"VIZ_ASSETS_DIR": "/app/assets"},
    depends_on=[ml_training_env],
)


@visualization_env.task
async def report_pipeline(n: int) -> str:
    """Generate a series of `n` points, train on it and render a one-line report."""
    # Lazy import: `render` is loaded only when this task runs, never when the
    # environment is discovered, so `sys.modules` alone would miss it.
    from services.visualization import render

    raw = await make_series(n)
    params = await train(raw)
    title = text.slugify("Trend Report")
    return render.report_line(title, params, raw)
