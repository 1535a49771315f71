"""Operator tools: the ``swarm-redis`` command line, read-only views, verify, snapshots, events, metrics."""
