"""Helpers for tests of code built on swarm_redis: the in-memory oracle and DAG builders."""
