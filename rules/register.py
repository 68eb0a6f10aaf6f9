"""The built-in target kinds, one folder each."""

from .bundle import rule as bundle
from .check import rule as check
from .deploy import rule as deploy
from .image import rule as image
from .pex import rule as pex


def rules():
    return [bundle.RULE, pex.RULE, image.RULE, check.RULE, deploy.RULE]


def config_tables():
    """The tables of `[tool.hatch.build.targets.flyte]` these kinds read."""
    return {"docker": image.CONFIG, "pex": pex.CONFIG, "deploy": deploy.CONFIG}
