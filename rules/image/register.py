"""The image kind's registration (collected by rules/register.py)."""


def rules():
    from . import rule

    return [rule.RULE]


def config_tables():
    from . import rule

    return {"docker": rule.CONFIG}
