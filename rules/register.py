"""The built-in target kinds."""

from . import bundle


def rules():
    return [bundle.RULE]
