"""The preprocessing service."""
