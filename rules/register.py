"""The built-in target kinds."""

from . import bundle, check, deploy, image, pex


def rules():
    return [bundle.RULE, pex.RULE, image.RULE, check.RULE, deploy.RULE]
