"""The visualization service."""
