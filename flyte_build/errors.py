"""The two kinds of failure a user sees, and their exit codes."""

from __future__ import annotations


class FlyteBuildError(Exception):
    """Base class: an error with a message meant for the user, no traceback."""

    exit_code = 1


class UserError(FlyteBuildError):
    """Bad input or usage: a config key, a module that fails to import, a cycle. Exit 2."""

    exit_code = 2


class BuildFailed(FlyteBuildError):
    """A build or deploy action failed. Exit 1."""

    exit_code = 1
