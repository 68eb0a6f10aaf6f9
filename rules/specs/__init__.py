"""Serialized task specs: the child process that serializes tasks with flyte."""
