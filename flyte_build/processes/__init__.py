"""Child processes that run the user's code.
"""
