"""The check kind's registration (collected by rules/register.py)."""


def rules():
    from . import rule

    return [rule.RULE]
