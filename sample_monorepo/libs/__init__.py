"""Shared libraries of the sample monorepo (plain Python, no third-party imports)."""
