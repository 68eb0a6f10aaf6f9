"""Small helpers used across services: text formatting and statistics."""
