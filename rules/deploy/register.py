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
    from . import api, plan

    return {"plan": api.plan, "deploy": api.deploy,
            "Plan": plan.Plan, "EnvPlan": plan.EnvPlan, "TaskPlan": plan.TaskPlan,
            "DeploySummary": api.DeploySummary, "EnvDeploy": api.EnvDeploy}


def config_tables():
    from . import rule

    return {"deploy": rule.CONFIG}


def config_options(parser):
    """The backend flags on `flyte-build config`, which shows what they set."""
    from .flags import backend_options

    backend_options(parser)


def config_params(args) -> tuple:
    """This kind's run parameters from `flyte-build config`'s flags."""
    from .flags import params_from_args

    return (params_from_args(args),)


def flyte_config_rows(loaded, table_cfg, settings) -> dict:
    """The backend's rows of `flyte-build config`'s section for flyte's config file."""
    from . import backend_settings

    return backend_settings.rows(loaded, table_cfg, settings)
