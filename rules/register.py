"""The built-in target kinds."""

from . import bundle, check, deploy, image, pex


def rules():
    return [bundle.RULE, pex.RULE, image.RULE, check.RULE, deploy.RULE]


def config_tables():
    """The tables of `[tool.hatch.build.targets.flyte]` these kinds read."""
    return {"docker": image.CONFIG, "pex": pex.CONFIG, "deploy": deploy.CONFIG}
