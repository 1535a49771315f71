"""jobmon's ``TaskResources`` in the shared resource cache: a codec and a stable digest.

jobmon's orchestrator caches every validated or adjusted ``TaskResources`` with
``state.cache_resources(hash(tr), tr)``. On a shared state the value goes to Redis, so it needs
a codec, and the key needs a digest that is the same in every replica: jobmon's
``TaskResources.__hash__`` mixes ``hash(queue_name)`` and ``hash(json)`` of strings, which Python
salts per process.

Stored form (JSON, through :func:`swarm_redis.register_resource_class`)::

    {"requested_resources": {...},
     "queue": {"class": NAME, "queue_id": 7, "queue_name": "null.q", "parameters": {...}},
     "id": 12 | null}

Decoding never imports anything: the queue's class NAME is looked up in an allow-list of
cluster-queue classes (:func:`register_queue_class`). A class is on it when this process
registered it, encoded a ``TaskResources`` on one of its queues, or built jobmon's task objects
through :func:`swarm_redis.jobmon.attach_jobmon` (which registers the queues it loads). The
decoded queue is the process's own instance when it already has one with the same class and id.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import Any

import orjson

from swarm_redis.codec import DefaultCodec, register_resource_class
from swarm_redis.errors import InvalidInputError, InvalidTypeError, ResourceDecodeError

__all__ = [
    "TASK_RESOURCES_NAME",
    "JobmonCodec",
    "decode_task_resources",
    "encode_task_resources",
    "register_queue",
    "register_queue_class",
    "register_task_resources",
    "task_resources_digest",
]

#: The name stored with every cached jobmon TaskResources (stable across hosts and versions).
TASK_RESOURCES_NAME = "jobmon:TaskResources"


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class _Queues:
    """Allowed cluster-queue classes by name, and this process's queue instances by (name, id)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.classes: dict[str, type] = {}
        self.instances: dict[tuple[str, int], Any] = {}

    def add_class(self, cls: type, name: str | None = None) -> str:
        if not isinstance(cls, type):
            raise InvalidTypeError(f"register_queue_class takes a class, not {type(cls).__name__}")
        name = _class_name(cls) if name is None else name
        if not isinstance(name, str) or not name or not name.isprintable() or len(name) > 200:
            raise InvalidInputError(f"queue class name {name!r} must be 1..200 printable chars")
        with self.lock:
            known = self.classes.get(name)
            if known is not None and known is not cls:
                raise InvalidInputError(
                    f"queue class name {name!r} is already registered for {_class_name(known)}"
                )
            self.classes[name] = cls
        return name

    def add_instance(self, queue: Any) -> str:
        name = self.add_class(type(queue))
        with self.lock:
            self.instances.setdefault((name, int(queue.queue_id)), queue)
        return name


_QUEUES = _Queues()
_REQUESTER_LOCK = threading.Lock()
_REQUESTER: Any = None


def register_queue_class(cls: type, *, name: str | None = None) -> type:
    """Allow cached TaskResources on queues of ``cls`` (a jobmon ``ClusterQueue`` class).

    Args:
        cls: The queue class, built as ``cls(queue_id, queue_name, parameters)``.
        name: The name stored with its queues (default ``module:qualname``).
    """
    _QUEUES.add_class(cls, name)
    return cls


def register_queue(queue: Any) -> None:
    """Allow ``queue``'s class and decode cached values on its id to this very instance."""
    _QUEUES.add_instance(queue)


def _default_requester() -> Any:
    global _REQUESTER
    with _REQUESTER_LOCK:
        if _REQUESTER is None:
            from jobmon.core.requester import Requester

            _REQUESTER = Requester.from_defaults()
        return _REQUESTER


def encode_task_resources(tr: Any) -> dict[str, Any]:
    """The JSON-able form of a jobmon TaskResources (registers its queue's class)."""
    queue = tr.queue
    name = _QUEUES.add_instance(queue)
    resources = tr.requested_resources
    if not isinstance(resources, Mapping):
        raise InvalidTypeError(
            f"TaskResources.requested_resources must be a dict, got {type(resources).__name__}"
        )
    return {
        "requested_resources": dict(resources),
        "queue": {
            "class": name,
            "queue_id": int(queue.queue_id),
            "queue_name": str(queue.queue_name),
            "parameters": dict(queue.parameters or {}),
        },
        "id": tr.id if tr.is_bound else None,
    }


def decode_task_resources(doc: dict[str, Any]) -> Any:
    """A jobmon TaskResources from :func:`encode_task_resources`'s form; imports nothing named."""
    from jobmon.client.task_resources import TaskResources

    resources = doc.get("requested_resources")
    q = doc.get("queue")
    if not isinstance(resources, dict) or not isinstance(q, dict):
        raise ResourceDecodeError("cached TaskResources lack requested_resources or queue")
    name, queue_id, queue_name = q.get("class"), q.get("queue_id"), q.get("queue_name")
    parameters = q.get("parameters", {})
    if (
        not isinstance(name, str)
        or isinstance(queue_id, bool)
        or not isinstance(queue_id, int)
        or not isinstance(queue_name, str)
        or not isinstance(parameters, dict)
    ):
        raise ResourceDecodeError(f"cached TaskResources have a malformed queue: {q!r:.200}")
    bound_id = doc.get("id")
    if bound_id is not None and (isinstance(bound_id, bool) or not isinstance(bound_id, int)):
        raise ResourceDecodeError(f"cached TaskResources have a bad id {bound_id!r:.50}")
    with _QUEUES.lock:
        queue = _QUEUES.instances.get((name, queue_id))
        cls = _QUEUES.classes.get(name)
    if queue is None:
        if cls is None:
            raise ResourceDecodeError(
                f"cached TaskResources are on a queue of class {name!r}, which is not "
                "registered in this process: call swarm_redis.jobmon.register_queue_class() "
                "for it (or build the run's tasks with attach_jobmon first); stored class names "
                "are never imported"
            )
        queue = cls(queue_id, queue_name, parameters)
        with _QUEUES.lock:
            queue = _QUEUES.instances.setdefault((name, queue_id), queue)
    tr = TaskResources(dict(resources), queue, requester=_default_requester())
    if bound_id is not None:
        tr._id = bound_id
    return tr


def _identity(tr: Any) -> bytes:
    """What jobmon's TaskResources equality covers: queue name and requested resources."""
    try:
        return orjson.dumps(
            [str(tr.queue.queue_name), tr.requested_resources], option=orjson.OPT_SORT_KEYS
        )
    except orjson.JSONEncodeError as exc:
        raise InvalidTypeError(f"TaskResources are not JSON-able: {exc}") from None


def task_resources_digest(tr: Any) -> int:
    """A 63-bit digest of a TaskResources, the same in every process and host.

    It covers what jobmon's equality covers (queue name and requested resources), so two
    TaskResources jobmon calls equal have the same digest, bound or not; it never uses Python's
    salted ``hash()``. Use it as the cache key instead of ``hash(tr)``. Equal to
    ``swarm_redis.resource_digest(tr, JobmonCodec())``.
    """
    return int.from_bytes(hashlib.sha256(_identity(tr)).digest()[:8], "big") >> 1


class JobmonCodec(DefaultCodec):
    """The default codec, with jobmon's TaskResources digested by what makes them equal.

    Stored values are the same as the default codec's; only :meth:`canonical` (what
    :func:`swarm_redis.resource_digest` hashes, e.g. for the queue's resource keys) differs for
    TaskResources: queue name and requested resources, not the server id a bind adds later.
    """

    def canonical(self, value: Any) -> bytes:
        from jobmon.client.task_resources import TaskResources

        if isinstance(value, TaskResources):
            return _identity(value)
        return super().canonical(value)


def register_task_resources() -> type:
    """Register jobmon's TaskResources with the resource codec (idempotent); returns the class."""
    from jobmon.client.task_resources import TaskResources

    register_resource_class(
        TaskResources,
        name=TASK_RESOURCES_NAME,
        encode=encode_task_resources,
        decode=decode_task_resources,
    )
    cls: type = TaskResources
    return cls
