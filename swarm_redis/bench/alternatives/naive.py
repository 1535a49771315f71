"""The obvious first version: one plain command per Redis call, no transaction. It is not safe
with several replicas; it shows what round trips cost."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from swarm_redis.bench.alternatives.common import (
    ACTIVE,
    FINAL,
    AltBatch,
    AltReplica,
    mirror,
    now_ms,
    record,
)
from swarm_redis.engine.keys import RunKeys


class NaiveState:
    """One plain command per Redis call, no transaction: the obvious first version.

    Same layout and operations as :class:`PipelinedState`; unsafe with several replicas.
    """

    def __init__(self, redis: Any, run_id: int, *, prefix: str = "swarm") -> None:
        self.redis = redis
        self.keys = RunKeys(prefix, run_id)
        self.tasks: dict[int, Any] = {}
        self.round_trips = 0
        self._seq = 0

    def _do(self, *args: Any) -> Any:
        self.round_trips += 1
        return self.redis.execute_command(*args)

    def register_objects(self, tasks: Iterable[Any]) -> None:
        """Know the task objects of a run registered by someone else (setup, not timed)."""
        for t in tasks:
            self.tasks[t.task_id] = t

    def enqueue(self, tasks: Sequence[Any]) -> None:
        """Queue tasks one command at a time."""
        k = self.keys
        for t in tasks:
            raw = self._do("HGET", k.task, t.task_id)
            if raw is None or raw[0] in FINAL or self._do("HEXISTS", k.claims, t.task_id):
                continue
            if self._do("SADD", k.queued, t.task_id) == 1:
                self._do("RPUSH", k.ready, t.task_id)
        self._do("HINCRBY", k.meta, "version", 1)

    def join(self, replica_id: str, ttl_s: float = 3600.0) -> AltReplica:
        """Register a replica with a lease."""
        replica = AltReplica(replica_id, secrets.token_hex(8), int(ttl_s * 1000))
        ms = now_ms(self._do("TIME"))
        rec = f"{replica.incarnation}|{ms + replica.ttl_ms}|{ms}"
        self._do("HSET", self.keys.replicas, replica_id, rec)
        return replica

    def claim(self, replica: AltReplica, max_size: int = 500) -> AltBatch | None:
        """Pop tasks of the head's array one by one, within the free capacities."""
        k = self.keys
        limit = int(self._do("HGET", k.meta, "limit") or 0)
        active = {a: int(v) for a, v in dict(self._do("HGETALL", k.active)).items()}
        reserved_run = int(self._do("HGET", k.reserved, "run") or 0)
        cap = limit - sum(active.values()) - reserved_run
        self._seq += 1
        bid = f"{replica.id}:{self._seq}"
        ids: list[int] = []
        arr: str | None = None
        while len(ids) < min(cap, max_size):
            tid = self._do("LPOP", k.ready)
            if tid is None:
                break
            a = record(self._do("HGET", k.task, tid))[4]
            if arr is None:
                arr = a
                limit_a = int(self._do("HGET", k.arrays, a) or 0)
                reserved_a = int(self._do("HGET", k.reserved, a) or 0)
                cap = min(cap, limit_a - active.get(a, 0) - reserved_a)
            elif a != arr:
                self._do("LPUSH", k.ready, tid)
                break
            self._do("SREM", k.queued, tid)
            self._do("HDEL", k.qres, tid)
            self._do("HSET", k.claims, tid, bid)
            ids.append(int(tid))
        if not ids or arr is None:
            return None
        rec = f"{replica.id}|{replica.incarnation}|{arr}||{','.join(map(str, ids))}"
        self._do("HSET", k.batches, bid, rec)
        self._do("HINCRBY", k.reserved, "run", len(ids))
        self._do("HINCRBY", k.reserved, arr, len(ids))
        self._do("HINCRBY", k.meta, "version", 1)
        return AltBatch(bid, int(arr), "", tuple(ids), [self.tasks[i] for i in ids])

    def ack(self, replica: AltReplica, batch: AltBatch, statuses: Mapping[int, str]) -> set[Any]:
        """Apply the answer task by task, then release the claim."""
        k = self.keys
        changed = self._apply(
            [(i, statuses[i]) for i in batch.task_ids if i in statuses], False, only="GA"
        )[0]
        for i in batch.task_ids:
            self._do("HDEL", k.claims, i)
        self._do("HDEL", k.batches, batch.batch_id)
        self._do("HINCRBY", k.reserved, "run", -len(batch.task_ids))
        self._do("HINCRBY", k.reserved, batch.array_id, -len(batch.task_ids))
        return changed

    def apply(
        self, statuses: Mapping[int, str], *, propagate: bool = True
    ) -> tuple[set[Any], list[Any]]:
        """Apply statuses one command at a time, propagating completions."""
        return self._apply(list(statuses.items()), propagate)

    def _apply(
        self, changes: Sequence[tuple[int, str]], propagate: bool, only: str = ""
    ) -> tuple[set[Any], list[Any]]:
        k = self.keys
        changed: set[Any] = set()
        ready: list[Any] = []
        for tid, new in changes:
            raw = self._do("HGET", k.task, tid)
            if raw is None:
                continue
            rec = record(raw)
            old = rec[0]
            if old in FINAL or (only and old not in only):
                continue
            if old != new:
                self._do("SMOVE", k.status_set(old), k.status_set(new), tid)
                if (old in ACTIVE) != (new in ACTIVE):
                    self._do("HINCRBY", k.active, rec[4], 1 if new in ACTIVE else -1)
                rec[0] = new
            credit = propagate and new == "D" and "p" not in rec[3]
            if credit:
                rec[3] += "p"
            self._do("HSET", k.task, tid, "|".join(rec))
            mirror(self.tasks.get(tid), rec)
            if tid in self.tasks:
                changed.add(self.tasks[tid])
            if credit and rec[7]:
                for child in rec[7].split(","):
                    crec = record(self._do("HGET", k.task, child))
                    crec[1] = str(int(crec[1]) + 1)
                    self._do("HSET", k.task, child, "|".join(crec))
                    mirror(self.tasks.get(int(child)), crec)
                    if crec[0] == "G" and crec[1] == crec[5]:
                        if self._do("HEXISTS", k.claims, child):
                            continue
                        if self._do("SADD", k.queued, child) == 1:
                            self._do("RPUSH", k.ready, child)
                            ready.append(self.tasks[int(child)])
        self._do("HINCRBY", k.meta, "version", 1)
        return changed, ready
