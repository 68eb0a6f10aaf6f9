"""The engine: the target graph, the run's context, rule-set loading and the executor.
"""
