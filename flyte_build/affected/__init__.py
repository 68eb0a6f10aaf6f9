"""Affected targets: what a change since a git revision touches, and why.
"""
