"""swarm_redis for jobmon: its SwarmState, task objects and TaskResources on shared state.

Needs jobmon 3.6 (``jobmon_client``, ``jobmon_core``), which is not on the package index: install
it from its source (see the README, "Use with jobmon"). Importing this package registers jobmon's
``TaskResources`` with the resource codec (:mod:`swarm_redis.jobmon.resources`).
"""

from __future__ import annotations

try:
    import jobmon.client.task_resources  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "swarm_redis.jobmon needs jobmon 3.6 (jobmon_client and jobmon_core), which is not on "
        "the package index: install it from its source, e.g. "
        "SETUPTOOLS_SCM_PRETEND_VERSION=3.6.0 pip install SRC/jobmon_core SRC/jobmon_client "
        "(SRC: jobmon's source tree, commit 5a5c6cb); see the README, 'Use with jobmon'"
    ) from exc

from swarm_redis.jobmon.dropin import JobmonSwarmState, attach_jobmon, patch_jobmon
from swarm_redis.jobmon.resources import (
    TASK_RESOURCES_NAME,
    JobmonCodec,
    decode_task_resources,
    encode_task_resources,
    register_queue,
    register_queue_class,
    register_task_resources,
    task_resources_digest,
)

register_task_resources()

__all__ = [
    "TASK_RESOURCES_NAME",
    "JobmonCodec",
    "JobmonSwarmState",
    "attach_jobmon",
    "decode_task_resources",
    "encode_task_resources",
    "patch_jobmon",
    "register_queue",
    "register_queue_class",
    "register_task_resources",
    "task_resources_digest",
]
