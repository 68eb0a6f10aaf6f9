"""Settings: the pyproject tables, their schema, and the project's interpreter.
"""
