"""Serving helpers; imported only by the inference service."""

from __future__ import annotations

import os

from libs.mlkit.model import LinearModel

# The model the inference service serves when no parameters are configured.
DEFAULT_PARAMS = {"slope": 2.0, "intercept": 1.0}


def load_model() -> LinearModel:
    """Build the served model from $MODEL_SLOPE / $MODEL_INTERCEPT, else the defaults."""
    return LinearModel(
        slope=float(os.environ.get("MODEL_SLOPE", DEFAULT_PARAMS["slope"])),
        intercept=float(os.environ.get("MODEL_INTERCEPT", DEFAULT_PARAMS["intercept"])),
    )


def predict_batch(model: LinearModel, xs: list[float], precision: int = 3) -> list[float]:
    return [round(y, precision) for y in model.predict(xs)]
