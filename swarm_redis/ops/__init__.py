"""Operator tools: the ``swarm-redis`` command line, read-only views, verify, snapshots, events,
metrics.

``cli`` (parser and entry point) -> ``handlers`` (one function per command) -> the readers
``reads`` (run figures, liveness), ``tasks`` (task lists, why a task waits), ``events``,
``verify`` (drift and repair), ``snapshot`` (export, check, import), ``purge``; ``render``
turns what they read into rich views; ``exporter`` serves the same figures to Prometheus.
"""
