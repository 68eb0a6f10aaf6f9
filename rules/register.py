"""The built-in target kinds."""

from . import bundle, deploy, image, pex


def rules():
    return [bundle.RULE, pex.RULE, image.RULE, deploy.RULE]
