"""Operator commands over a run directory: status, cost, export, integrity checks, reruns.

They sit above the framework (core) and the executors, and are what the CLI calls."""
