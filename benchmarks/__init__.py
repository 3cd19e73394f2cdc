"""Scripts that report figures; each runs as a module from the repository root, as root.

``python -m benchmarks.suite`` (``make bench``), ``benchmarks.engine``, ``benchmarks.http_api``,
``benchmarks.agents``, ``benchmarks.soak``; docs/benchmarks.md explains them.
"""
