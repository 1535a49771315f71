"""jobmon's TaskResources in the shared resource cache: codec, allow-list, stable digest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from fronts import Front
from jobmon_env import require_jobmon

require_jobmon()

from jobmon.client.task_resources import TaskResources  # noqa: E402
from jobmon.core.requester import Requester  # noqa: E402
from jobmon.plugins.multiprocess.multiproc_queue import MultiprocessQueue  # noqa: E402
from jobmon.plugins.sequential.seq_queue import SequentialQueue  # noqa: E402

from swarm_redis import DefaultCodec, ResourceDecodeError  # noqa: E402
from swarm_redis.jobmon import (  # noqa: E402
    TASK_RESOURCES_NAME,
    register_queue_class,
    task_resources_digest,
)
from swarm_redis.jobmon.resources import _QUEUES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class _NoRequester:
    """Stands in for jobmon's Requester where nothing is sent."""


def _tr(resources: dict[str, Any], queue: Any = None, bound: int | None = None) -> Any:
    queue = queue or SequentialQueue(3, "null.q", {})
    tr = TaskResources(dict(resources), queue, cast(Requester, _NoRequester()))
    if bound is not None:
        tr._id = bound
    return tr


def test_round_trip_keeps_equality_queue_and_id() -> None:
    codec = DefaultCodec()
    queue = SequentialQueue(3, "null.q", {})
    original = _tr({"memory": "2G", "runtime": "1h", "cores": 2}, queue, bound=41)
    data = codec.encode(original)
    doc = orjson.loads(data)
    assert doc["c"] == TASK_RESOURCES_NAME
    assert doc["v"]["requested_resources"] == {"memory": 2, "runtime": 3600, "cores": 2}
    assert doc["v"]["queue"]["queue_id"] == 3 and doc["v"]["id"] == 41
    back = codec.decode(data)
    assert isinstance(back, TaskResources)
    assert back == original and back.requested_resources == original.requested_resources
    assert back.queue is queue  # the process's own queue instance
    assert back.id == 41
    unbound = codec.decode(codec.encode(_tr({"cores": 1}, queue)))
    assert not unbound.is_bound


def test_digest_matches_jobmon_equality() -> None:
    a = _tr({"memory": "2G", "cores": 1})
    b = _tr({"cores": 1, "memory": 2})  # same resources, other key order and unit
    c = _tr({"cores": 2, "memory": 2})
    d = _tr({"cores": 1, "memory": 2}, SequentialQueue(3, "other.q", {}))
    assert a == b and task_resources_digest(a) == task_resources_digest(b)
    assert a != c and task_resources_digest(a) != task_resources_digest(c)
    assert a != d and task_resources_digest(a) != task_resources_digest(d)
    assert 0 <= task_resources_digest(a) < 2**63


def test_digest_is_the_same_in_every_process() -> None:
    code = (
        "from jobmon.client.task_resources import TaskResources\n"
        "from jobmon.plugins.sequential.seq_queue import SequentialQueue\n"
        "from swarm_redis.jobmon import task_resources_digest\n"
        "tr = TaskResources({'memory': '2G', 'runtime': 60, 'cores': 1},"
        " SequentialQueue(3, 'null.q', {}), object())\n"
        "print(task_resources_digest(tr), hash(tr))\n"
    )
    procs = [  # both at once: each spends seconds importing jobmon
        subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("1", "2")
    ]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outs.append(out.split())
    here = task_resources_digest(_tr({"memory": "2G", "runtime": 60, "cores": 1}))
    assert outs[0][0] == outs[1][0] == str(here)
    assert outs[0][1] != outs[1][1]  # jobmon's own hash() is salted per process


def test_queue_class_must_be_allowed_to_decode() -> None:
    codec = DefaultCodec()
    data = codec.encode(_tr({"cores": 1}))
    doc = orjson.loads(data)
    doc["v"]["queue"]["class"] = "os:system"
    with pytest.raises(ResourceDecodeError, match="not registered"):
        codec.decode(orjson.dumps(doc))


def test_registered_queue_class_is_built_from_stored_fields() -> None:
    register_queue_class(MultiprocessQueue, name="test:MultiprocessQueue")
    codec = DefaultCodec()
    doc = orjson.loads(codec.encode(_tr({"cores": 1})))
    doc["v"]["queue"] = {
        "class": "test:MultiprocessQueue",
        "queue_id": 987654,
        "queue_name": "mp.q",
        "parameters": {"cores": (1, 4)},
    }
    back = codec.decode(orjson.dumps(doc))
    assert isinstance(back.queue, MultiprocessQueue)
    assert back.queue.queue_id == 987654 and back.queue.queue_name == "mp.q"
    assert _QUEUES.instances[("test:MultiprocessQueue", 987654)] is back.queue


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v.pop("queue"),
        lambda v: v.__setitem__("requested_resources", [1]),
        lambda v: v["queue"].__setitem__("queue_id", "3"),
        lambda v: v["queue"].__setitem__("queue_id", True),
        lambda v: v["queue"].__setitem__("parameters", []),
        lambda v: v.__setitem__("id", "x"),
    ],
)
def test_malformed_values_are_refused(mutate: Any) -> None:
    codec = DefaultCodec()
    doc = orjson.loads(codec.encode(_tr({"cores": 1})))
    mutate(doc["v"])
    with pytest.raises(ResourceDecodeError):
        codec.decode(orjson.dumps(doc))


def test_cached_on_shared_state_and_read_by_another_replica(
    front: Front, run_id: int, prefix: str
) -> None:
    st = front.state(run_id, prefix=prefix)
    tr = _tr({"memory": "3G", "cores": 2}, bound=5)
    key = task_resources_digest(tr)
    assert st.cache_resources(key, tr) is tr
    other = front.attach(run_id, prefix=prefix)
    got = other.get_cached_resources(key)
    assert isinstance(got, TaskResources) and got == tr and got is not tr and got.id == 5
    # first writer wins: another replica's equal value gets the stored one back
    again = other.cache_resources(key, _tr({"memory": 3, "cores": 2}))
    assert again is got
