"""Discovery: which environments, tasks and apps a project holds, found by importing its
modules in a child process, and what each module read.
"""
