"""The optimistic-transaction implementation (WATCH/MULTI/EXEC, pipelined reads, retries):
what a competent engineer writes for several replicas without Lua."""

from __future__ import annotations

import functools
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from redis.exceptions import WatchError

from swarm_redis.bench.alternatives.common import (
    ACTIVE,
    BULK,
    EVENTS_MAXLEN,
    FINAL,
    AltBatch,
    AltReplica,
    Cmd,
    Writes,
    chunks,
    event,
    mirror,
    now_ms,
    record,
    transitions,
)
from swarm_redis.engine.keys import RunKeys
from swarm_redis.errors import LeaseLostError


class PipelinedState:
    """Optimistic-transaction implementation (WATCH/MULTI/EXEC, pipelined reads, retries).

    Args:
        redis: A redis-py client with ``decode_responses=True``.
        run_id: The workflow run id.
        prefix: Key prefix (same layout as :class:`~swarm_redis.state.RedisSwarmState`).
        chunk_size: Status changes per transaction.
    """

    def __init__(
        self, redis: Any, run_id: int, *, prefix: str = "swarm", chunk_size: int = 1000
    ) -> None:
        self.redis = redis
        self.keys = RunKeys(prefix, run_id)
        self.chunk_size = chunk_size
        self.tasks: dict[int, Any] = {}
        #: Transactions committed and transactions retried after a WatchError.
        self.transactions = 0
        self.retries = 0
        self.round_trips = 0
        self._seq = 0

    # --- plumbing -----------------------------------------------------------------------------

    def _read(self, *commands: Cmd) -> list[Any]:
        """Run reads in one pipelined round trip (not transactional: WATCH guards them)."""
        pipe = self.redis.pipeline(transaction=False)
        for c in commands:
            pipe.execute_command(*c)
        self.round_trips += 1
        result: list[Any] = pipe.execute()
        return result

    def _transact(self, watch: Sequence[str], plan: Callable[[], tuple[list[Cmd], Any]]) -> Any:
        """WATCH, plan from fresh reads, MULTI/EXEC the plan's writes; retry on conflict."""
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    if watch:
                        pipe.watch(*watch)
                        self.round_trips += 1
                    writes, result = plan()
                    if not writes:
                        pipe.reset()
                        return result
                    pipe.multi()
                    for c in writes:
                        pipe.execute_command(*c)
                    pipe.execute_command("HINCRBY", self.keys.meta, "version", 1)
                    pipe.execute()
                    self.round_trips += 1
                    self.transactions += 1
                    return result
                except WatchError:
                    self.retries += 1

    # --- run and registration -----------------------------------------------------------------

    def create(self, limit: int, status: str = "B") -> None:
        """Create the run's meta hash unless it exists."""

        def plan() -> tuple[list[Cmd], Any]:
            (exists,) = self._read(("EXISTS", self.keys.meta))
            if exists:
                return [], None
            meta = ("HSET", self.keys.meta, "limit", limit, "status", status, "version", 0)
            return [(*meta, "events_maxlen", EVENTS_MAXLEN, "npc", 0)], None

        self._transact([self.keys.meta], plan)

    def add_arrays(self, arrays: Iterable[Any]) -> None:
        """Register arrays (their limits overwrite stored ones)."""
        pairs: list[Any] = []
        for a in arrays:
            pairs += (a.array_id, a.max_concurrently_running)
        if pairs:
            self._transact([], lambda: ([("HSET", self.keys.arrays, *pairs)], None))

    def add_tasks(self, tasks: Sequence[Any], chunk: int = 2000) -> None:
        """Register tasks idempotently (existing records win), in chunks of transactions."""
        for part in chunks(tasks, chunk):
            for t in part:
                self.tasks[t.task_id] = t
            self._transact([self.keys.task], functools.partial(self._plan_register, part))

    def _plan_register(self, part: Sequence[Any]) -> tuple[list[Cmd], Any]:
        ids = [t.task_id for t in part]
        (raws,) = self._read(("HMGET", self.keys.task, *ids))
        pairs: list[Any] = []
        by_status: dict[str, list[int]] = defaultdict(list)
        active: Counter[str] = Counter()
        for t, raw in zip(part, raws):
            if raw is not None:
                mirror(t, record(raw))
                continue
            children = ",".join(str(c.task_id) for c in t.downstream_swarm_tasks)
            done = t.num_upstreams_done
            rec = f"{t.status}|{done}|||{t.array_id}|{t.num_upstreams}|{done}|{children}"
            pairs += (t.task_id, rec)
            by_status[t.status].append(t.task_id)
            if t.status in ACTIVE:
                active[str(t.array_id)] += 1
        writes: list[Cmd] = [("HSET", self.keys.task, *p) for p in chunks(pairs, 2 * BULK)]
        writes += [("SADD", self.keys.status_set(s), *ids) for s, ids in by_status.items()]
        writes += [("HINCRBY", self.keys.active, a, n) for a, n in active.items()]
        if pairs:
            writes.append(event(self.keys, "-", "register", "n", len(pairs) // 2))
        return writes, None

    def join(self, replica_id: str, ttl_s: float = 3600.0) -> AltReplica:
        """Register a replica with a lease (Redis time), as ``join_replica`` does."""
        replica = AltReplica(replica_id, secrets.token_hex(8), int(ttl_s * 1000))

        def plan() -> tuple[list[Cmd], Any]:
            ms = now_ms(self._read(("TIME",))[0])
            rec = f"{replica.incarnation}|{ms + replica.ttl_ms}|{ms}"
            return [("HSET", self.keys.replicas, replica_id, rec)], None

        self._transact([self.keys.replicas], plan)
        return replica

    def _lease_check(self, replica: AltReplica, raw: str | None, now: Any) -> None:
        if raw is None:
            raise LeaseLostError(f"replica {replica.id} is not a member")
        inc, deadline, _ = raw.split("|")
        if inc != replica.incarnation or int(deadline) <= now_ms(now):
            raise LeaseLostError(f"lease of replica {replica.id} is lost")

    # --- queue ----------------------------------------------------------------------------------

    def enqueue(self, tasks: Sequence[Any]) -> list[Any]:
        """Queue tasks at most once (skip unknown, final, queued or claimed ones)."""
        ids = [t.task_id for t in tasks]
        k = self.keys

        def plan() -> tuple[list[Cmd], Any]:
            raws, queued, claims = self._read(
                ("HMGET", k.task, *ids), ("SMISMEMBER", k.queued, *ids), ("HMGET", k.claims, *ids)
            )
            ok = [
                i
                for i, raw, q, c in zip(ids, raws, queued, claims)
                if raw is not None and raw[0] not in FINAL and not int(q) and c is None
            ]
            if not ok:
                return [], []
            writes: list[Cmd] = [("SADD", k.queued, *ok), ("RPUSH", k.ready, *ok)]
            writes.append(event(k, "-", "enqueue", "n", len(ok), "front", 0))
            return writes, ok

        queued_ids: list[int] = self._transact([k.task, k.queued, k.claims], plan)
        return [self.tasks[i] for i in queued_ids if i in self.tasks]

    def claim(
        self, replica: AltReplica, max_size: int = 500, window: int | None = None
    ) -> AltBatch | None:
        """Claim the batch the scheduler would form next, within the free capacities.

        Same rules as ``claim_batch.lua`` (without orphans): the head is the first queued task
        whose array has free capacity; joiners of the same array and resource key come from
        the ``window`` entries after it; the others keep their order.
        """
        k = self.keys
        win = window or max(4 * max_size, 2000)

        def plan() -> tuple[list[Cmd], Any]:
            member, now, head, limit, arrays, active, reserved, *sizes = self._read(
                ("HGET", k.replicas, replica.id),
                ("TIME",),
                ("LRANGE", k.ready, 0, win - 1),
                ("HGET", k.meta, "limit"),
                ("HGETALL", k.arrays),
                ("HGETALL", k.active),
                ("HGETALL", k.reserved),
                *(("SCARD", k.status_set(s)) for s in "QIOR"),
            )
            self._lease_check(replica, member, now)
            if not head:
                return [], None
            active_n = {a: int(v) for a, v in dict(active).items()}
            reserved_n = {a: int(v) for a, v in dict(reserved).items()}
            free_run = int(limit or 0) - sum(int(n) for n in sizes) - reserved_n.get("run", 0)
            if free_run <= 0:
                return [], None
            raws, rks = self._read(("HMGET", k.task, *head), ("HMGET", k.qres, *head))
            recs = [record(r) if r is not None else None for r in raws]
            arrs = [r[4] if r is not None and r[0] not in FINAL else "" for r in recs]
            lims = dict(arrays)

            def free(a: str) -> int:
                if a not in lims:
                    return 0
                return int(lims[a]) - active_n.get(a, 0) - reserved_n.get(a, 0)

            start = next((i for i, a in enumerate(arrs) if free(a) > 0), None)
            if start is None:
                return [], None
            arr, rk = arrs[start], rks[start] or ""
            cap = min(max_size, free_run, free(arr))
            chosen = [
                j for j in range(start, len(head)) if arrs[j] == arr and (rks[j] or "") == rk
            ][:cap]
            picked = set(chosen)
            ids = [int(head[j]) for j in chosen]
            rest = [head[j] for j in range(len(head)) if j not in picked]
            self._seq += 1
            bid = f"{replica.id}:{self._seq}"
            writes: list[Cmd] = [("LTRIM", k.ready, len(head), -1)]
            if rest:
                writes.append(("LPUSH", k.ready, *reversed(rest)))
            writes.append(("SREM", k.queued, *ids))
            pairs: list[Any] = []
            for i in ids:
                pairs += (i, bid)
            writes.append(("HSET", k.claims, *pairs))
            rec = f"{replica.id}|{replica.incarnation}|{arr}|{rk}|{','.join(map(str, ids))}"
            writes.append(("HSET", k.batches, bid, rec))
            writes.append(("HINCRBY", k.reserved, "run", len(ids)))
            writes.append(("HINCRBY", k.reserved, arr, len(ids)))
            writes.append(("HINCRBY", k.counters, "claims", 1))
            writes.append(event(k, replica.id, "claim", "batch", bid, "n", len(ids)))
            return writes, AltBatch(bid, int(arr), rk, tuple(ids), [])

        watch = [k.replicas, k.ready, k.meta, k.arrays, k.active, k.reserved]
        watch += [k.status_set(s) for s in "QIOR"]
        batch: AltBatch | None = self._transact(watch, plan)
        if batch is not None:
            batch.tasks = [self.tasks[i] for i in batch.task_ids if i in self.tasks]
        return batch

    def ack(self, replica: AltReplica, batch: AltBatch, statuses: Mapping[int, str]) -> set[Any]:
        """Apply the queue call's answer to the batch's G/A tasks and close the batch.

        As ``ack_batch.lua``: tasks still G or A afterwards go back to the queue front.
        """
        k = self.keys
        ids = list(batch.task_ids)

        def plan() -> tuple[list[Cmd], Any]:
            member, now, held, raws, reserved = self._read(
                ("HGET", k.replicas, replica.id),
                ("TIME",),
                ("HGET", k.batches, batch.batch_id),
                ("HMGET", k.task, *ids),
                ("HMGET", k.reserved, "run", batch.array_id),
            )
            self._lease_check(replica, member, now)
            holder = held.split("|", 2)[:2] if held is not None else []
            if holder != [replica.id, replica.incarnation]:
                raise LeaseLostError(f"batch {batch.batch_id} is not held by {replica.id}")
            records = {i: record(r) for i, r in zip(ids, raws) if r is not None}
            changes = [
                (i, statuses[i])
                for i in ids
                if i in statuses and i in records and records[i][0] in "GA"
            ]
            w = Writes()
            transitions(w, records, changes, propagate=False, stamp=None)
            writes = w.commands(k, replica.id)
            back = [i for i in ids if i in records and records[i][0] in "GA"]
            gone = [i for i in ids if i not in set(back)]
            writes.append(("HDEL", k.claims, *ids))
            if back:
                writes += [("SADD", k.queued, *back), ("LPUSH", k.ready, *reversed(back))]
            if gone:
                writes.append(("HDEL", k.qres, *gone))
            for name, left in zip(("run", str(batch.array_id)), reserved):
                if int(left or 0) - len(ids) <= 0:
                    writes.append(("HDEL", k.reserved, name))
                else:
                    writes.append(("HINCRBY", k.reserved, name, -len(ids)))
            writes.append(("HDEL", k.batches, batch.batch_id))
            writes.append(("HINCRBY", k.counters, "acks", 1))
            writes.append(event(k, replica.id, "ack", "batch", batch.batch_id))
            return writes, w

        watch = [k.replicas, k.task, k.batches, k.claims, k.queued, k.reserved]
        w: Writes = self._transact(watch, plan)
        return self._mirror(w)[0]

    # --- updates --------------------------------------------------------------------------------

    def apply(
        self, statuses: Mapping[int, str], *, propagate: bool = True, stamp: int | None = None
    ) -> tuple[set[Any], list[Any]]:
        """Apply statuses in chunks; new completions credit their downstreams once and queue
        what became ready. Returns the changed tasks and the tasks queued."""
        k = self.keys
        changed: set[Any] = set()
        ready: list[Any] = []
        items = list(statuses.items())
        for part in chunks(items, self.chunk_size):

            def plan(part: Sequence[tuple[int, str]] = part) -> tuple[list[Cmd], Any]:
                return self._plan_apply(part, propagate, stamp)

            w: Writes = self._transact([k.task, k.queued, k.claims, k.ready], plan)
            c, r = self._mirror(w)
            changed |= c
            ready += r
        return changed, ready

    def _plan_apply(
        self, part: Sequence[tuple[int, str]], propagate: bool, stamp: int | None
    ) -> tuple[list[Cmd], Any]:
        k = self.keys
        ids = [i for i, _ in part]
        raws, queued = self._read(("HMGET", k.task, *ids), ("SMISMEMBER", k.queued, *ids))
        records = {i: record(r) for i, r in zip(ids, raws) if r is not None}
        in_queue = {i for i, q in zip(ids, queued) if int(q)}
        w = Writes()
        completed = transitions(w, records, part, propagate=propagate, stamp=stamp)
        for i in w.changed:
            if records[i][0] in FINAL and i in in_queue:
                w.finals_queued.append(i)
        if completed:
            credits: Counter[int] = Counter()
            for children in completed:
                for child in children.split(","):
                    credits[int(child)] += 1
            kids = list(credits)
            need = [c for c in kids if c not in records]
            cmds: list[Cmd] = [("SMISMEMBER", k.queued, *kids), ("HMGET", k.claims, *kids)]
            if need:
                cmds.append(("HMGET", k.task, *need))
            replies = self._read(*cmds)
            if need:
                records.update((c, record(r)) for c, r in zip(need, replies[2]) if r is not None)
            for c, q, claim in zip(kids, replies[0], replies[1]):
                rec = records.get(c)
                if rec is None:
                    continue
                before = int(rec[1])
                after = before + credits[c]
                rec[1] = str(after)
                w.records[c] = rec
                w.touched.append(c)
                nup = int(rec[5])
                if rec[0] == "G" and before < nup <= after and not int(q) and claim is None:
                    w.ready.append(c)
        return w.commands(k, "-"), w

    def _mirror(self, w: Writes) -> tuple[set[Any], list[Any]]:
        for i in (*w.changed, *w.touched):
            mirror(self.tasks.get(i), w.records[i])
        changed = {self.tasks[i] for i in w.changed if i in self.tasks}
        return changed, [self.tasks[i] for i in w.ready if i in self.tasks]

    # --- reads ----------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Tasks per status plus the queue length, in one round trip."""
        statuses = "GQIORDEAF"
        replies = self._read(
            *(("SCARD", self.keys.status_set(s)) for s in statuses), ("LLEN", self.keys.ready)
        )
        out = {s: int(n) for s, n in zip(statuses, replies)}
        out["ready"] = int(replies[-1])
        return out

    def all_final(self) -> bool:
        """True when every task is D or F and nothing is claimed (one round trip)."""
        k = self.keys
        total, done, failed, claimed = self._read(
            ("HLEN", k.task),
            ("SCARD", k.status_set("D")),
            ("SCARD", k.status_set("F")),
            ("HLEN", k.claims),
        )
        return int(total) == int(done) + int(failed) and int(claimed) == 0
