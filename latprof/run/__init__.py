"""The run engine: plans of units, executors (isolated worker processes or in-process), pooling over processes.

See docs/architecture.md.
"""
