"""The deploy kind's registration (collected by rules/register.py): its rule,
the `flyte-build deploy` command, the `plan`/`deploy` goals of the Python API
and the `deploy` config table."""


def rules():
    from . import rule

    return [rule.RULE]


def commands():
    from . import command

    return [command]


def api():
    from . import api, deployer, plan

    return {"plan": deployer.plan, "deploy": api.deploy,
            "Plan": plan.Plan, "EnvPlan": plan.EnvPlan, "TaskPlan": plan.TaskPlan,
            "DeploySummary": api.DeploySummary, "EnvDeploy": api.EnvDeploy}


def config_tables():
    from . import rule

    return {"deploy": rule.CONFIG}
