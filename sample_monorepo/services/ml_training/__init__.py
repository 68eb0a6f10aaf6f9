"""The ml_training service."""
