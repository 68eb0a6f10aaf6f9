"""A tiny, dependency-free machine learning kit: linear models and serving helpers."""
