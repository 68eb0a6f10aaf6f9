"""The built-in target kinds, one folder each.

The rule modules are imported where asked for: `flyte-build --help` reads only
`commands()`, and the image rule alone costs more than the rest of the help.
"""


def rules():
    from .bundle import rule as bundle
    from .check import rule as check
    from .deploy import rule as deploy
    from .image import rule as image
    from .pex import rule as pex
    from .specs import rule as specs

    return [bundle.RULE, pex.RULE, image.RULE, specs.RULE, check.RULE, deploy.RULE]


def commands():
    """CLI subcommands of this rule set (`flyte-build deploy`)."""
    from .deploy import command

    return [command]


def api():
    """Goals and result types this rule set adds to flyte_build's Python API."""
    from .deploy import api, deployer

    return {"plan": deployer.plan, "deploy": api.deploy,
            "Plan": deployer.Plan, "EnvPlan": deployer.EnvPlan, "TaskPlan": deployer.TaskPlan,
            "DeploySummary": api.DeploySummary, "EnvDeploy": api.EnvDeploy}


def config_tables():
    """The tables of `[tool.hatch.build.targets.flyte]` these kinds read."""
    from .deploy import rule as deploy
    from .image import rule as image
    from .pex import rule as pex

    return {"docker": image.CONFIG, "pex": pex.CONFIG, "deploy": deploy.CONFIG}
