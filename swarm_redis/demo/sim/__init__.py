"""A simulated jobmon server for tests and the demo, shared by several replica processes at once.

:mod:`~swarm_redis.demo.sim.model` is the server's model and its checks (usable in-process),
:mod:`~swarm_redis.demo.sim.wire` what crosses the socket (authenticated JSON frames),
:mod:`~swarm_redis.demo.sim.server` the server process and :class:`SimServer`, its handle, and
:mod:`~swarm_redis.demo.sim.client` the replica gateway over a connection (:class:`SimClient`).
``python -m swarm_redis.demo.sim`` is the server process itself.
"""

from swarm_redis.demo.sim.client import SimClient
from swarm_redis.demo.sim.model import (
    LimitViolation,
    QueueCall,
    SimConfig,
    SimCore,
    SimReport,
    format_server_time,
)
from swarm_redis.demo.sim.server import SimServer, serve_connection
from swarm_redis.demo.sim.wire import (
    AUTHKEY_ENV,
    config_from_json,
    config_to_json,
    report_from_json,
    report_to_json,
)

__all__ = [
    "AUTHKEY_ENV",
    "LimitViolation",
    "QueueCall",
    "SimClient",
    "SimConfig",
    "SimCore",
    "SimReport",
    "SimServer",
    "config_from_json",
    "config_to_json",
    "format_server_time",
    "report_from_json",
    "report_to_json",
    "serve_connection",
]
