"""The shared ready queue: enqueue at most once, requeue, dequeue in bounded chunks, page reads."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from swarm_redis.engine import commands as cmd
from swarm_redis.engine.commands import Call
from swarm_redis.engine.core.base import (
    DEQUEUE_CHUNK,
    ENQUEUE_CHUNK,
    LOAD_BATCH,
    QUEUE_PAGE,
    id_members,
)
from swarm_redis.engine.core.driver import Op
from swarm_redis.engine.core.registration import Registration
from swarm_redis.engine.replies import score_pairs
from swarm_redis.engine.validation import (
    MAX_SAFE_INT,
    check_flag,
    check_int,
    coerce_task_id,
)
from swarm_redis.errors import InvalidInputError, InvalidTypeError

logger = logging.getLogger(__name__)


class Queue(Registration):
    """Operations on the ready queue."""

    # --- queue ----------------------------------------------------------------------------------

    def enqueue(self, tasks: Sequence[Any], *, front: bool) -> Op[list[Any]]:
        """Queue tasks at most once (unknown tasks are registered first); the ones queued.

        Sent in calls of at most :data:`ENQUEUE_CHUNK` tasks, one round trip each. An id given
        twice counts once, at its first place, with the last non-empty resource key given for
        it (as one call would). At the front the chunks go last first, so the given order is
        the queue order at the end, as with one call.
        """
        front = check_flag(front, "front")
        unknown = [
            t for t in tasks if coerce_task_id(getattr(t, "task_id", None)) not in self.tasks
        ]
        if unknown:
            yield from self.add_tasks(unknown)
        keyed: dict[int, str] = {}
        for t in tasks:
            tid, rk = int(t.task_id), self.resource_key(t)
            if rk or tid not in keyed:
                keyed[tid] = rk
        items = list(keyed.items())
        yield from self.seal()
        if not items:
            return []
        chunks = [items[i : i + ENQUEUE_CHUNK] for i in range(0, len(items), ENQUEUE_CHUNK)]
        if front:
            chunks.reverse()
        replies = yield from self._one_by_one(
            [cmd.enqueue(self.keys, self.caller(), c, front=front) for c in chunks]
        )
        if front:
            replies.reverse()
        found = [t for reply in replies for t in cmd.triples(reply[1])]
        self.mirror(found)
        return [self.tasks[task_id] for task_id, _, _ in found]

    def requeue(
        self, front: Sequence[Any], back: Sequence[Any], chunk: int = ENQUEUE_CHUNK
    ) -> Op[None]:
        """Queue ``front`` at the head in its order and ``back`` at the tail.

        At most once each, as :meth:`enqueue` (for a local read-ahead buffer that gives back
        what it took off the queue). Chunks of ``chunk`` tasks, one script and one round trip
        each, so other clients are served in between.
        """
        yield from self.seal()

        def parts(tasks: Sequence[Any]) -> list[list[tuple[int, str]]]:
            items = [(int(t.task_id), self.resource_key(t)) for t in tasks]
            return [items[i : i + chunk] for i in range(0, len(items), chunk)]

        calls: list[Call] = [
            cmd.enqueue(self.keys, self.caller(), part, front=True)
            for part in reversed(parts(front))  # the last part first: the head ends in order
        ]
        calls += [cmd.enqueue(self.keys, self.caller(), part, front=False) for part in parts(back)]
        if not calls:
            return
        replies = yield from self._one_by_one(calls)
        self.mirror(t for reply in replies for t in cmd.triples(reply[1]))

    def dequeue(self, n: int) -> Op[list[Any]]:
        """Take up to ``n`` tasks from the head, in calls of at most :data:`DEQUEUE_CHUNK`."""
        objs, _ = yield from self.take(n)
        return objs

    def dequeue_one(self) -> Op[Any]:
        """The head of the ready queue, taken off it, or None when it is empty."""
        objs, _ = yield from self.take(1)
        return objs[0] if objs else None

    def take(self, n: int) -> Op[tuple[list[Any], int]]:
        """Dequeue up to ``n`` tasks; also the queue's length after (bounded calls, one round
        trip each, of at most :data:`DEQUEUE_CHUNK` tasks)."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise InvalidTypeError(f"dequeue count must be an int, got {type(n).__name__} {n!r}")
        if not 1 <= n <= MAX_SAFE_INT:
            raise InvalidInputError(f"dequeue count must be in 1..2^53-1, got {n}")
        found: list[tuple[int, str, int]] = []
        remaining = 0
        try:
            while len(found) < n:
                want = min(DEQUEUE_CHUNK, n - len(found))
                (reply,) = yield from self.scripts([cmd.dequeue(self.keys, self.caller(), want)])
                got = cmd.heads(reply[1])
                found += got
                remaining = int(reply[2])
                if len(got) < want or remaining == 0:
                    break
        except Exception:
            if found:  # earlier chunks took these: the caller never gets them, so queue them
                yield from self._give_back([t[0] for t in found])
            raise
        objs = yield from self.objects([t[0] for t in found])
        self.mirror(found)
        return objs, remaining

    def _give_back(self, ids: list[int]) -> Op[None]:
        """Queue ``ids`` at the head again, in their order: the tasks that earlier calls of a
        failed :meth:`take` dequeued. The caller's retry then gets them (the failed call, if
        it ran, is answered from the reply cache), and no task is lost until ``reconcile``.
        Best effort: if this fails too, ``reconcile`` queues them."""
        items = [(i, "") for i in ids]  # "": each keeps its last resource key
        chunks = [items[i : i + ENQUEUE_CHUNK] for i in range(0, len(items), ENQUEUE_CHUNK)]
        calls: list[Call] = [
            cmd.enqueue(self.keys, self.caller(), part, front=True) for part in reversed(chunks)
        ]
        try:
            yield from self._one_by_one(calls)
        except Exception as e:
            logger.warning("%d dequeued tasks not queued again (reconcile will): %s", len(ids), e)

    def queue_ids(self, start: int = 0, stop: int = -1) -> Op[list[int]]:
        """Queue entries ``start``..``stop`` (ranks, inclusive, negative from the end).

        Up to :data:`QUEUE_PAGE` entries are one ZRANGE; a longer range is read in pages
        keyed by position (score), so each read stays short. Between pages the queue may
        change: entries pushed at the front meanwhile are not seen, removed ones not returned,
        and the order of what is returned is the queue order.
        """
        start = check_int(start, "start", lo=-MAX_SAFE_INT)
        stop = check_int(stop, "stop", lo=-MAX_SAFE_INT)
        (n,) = yield from self.read(("ZCARD", self.keys.ready))
        first = start + n if start < 0 else start
        last = stop + n if stop < 0 else stop
        first, last = max(first, 0), min(last, n - 1)
        if last < first:
            return []
        if last - first < QUEUE_PAGE:
            (raw,) = yield from self.read(("ZRANGE", self.keys.ready, first, last))
            return id_members(raw)
        out: list[int] = []
        (raw,) = yield from self.read(
            ("ZRANGE", self.keys.ready, first, first + QUEUE_PAGE - 1, "WITHSCORES")
        )
        want = last - first + 1
        while True:
            pairs = score_pairs(raw)
            out += id_members(m for m, _ in pairs)[: want - len(out)]
            if len(out) >= want or len(pairs) < QUEUE_PAGE:
                return out
            after = f"({pairs[-1][1]}"
            (raw,) = yield from self.read(
                (
                    "ZRANGE",
                    self.keys.ready,
                    after,
                    "+inf",
                    "BYSCORE",
                    "LIMIT",
                    0,
                    QUEUE_PAGE,
                    "WITHSCORES",
                )
            )

    def queue_objects(self, start: int = 0, stop: int = -1) -> Op[list[Any]]:
        ids = yield from self.queue_ids(start, stop)
        if not ids:
            return []
        objs = yield from self.objects(ids)
        for i in range(0, len(ids), LOAD_BATCH):
            part = ids[i : i + LOAD_BATCH]
            (raws,) = yield from self.read(("HMGET", self.keys.task, *part))
            states = [self.decode(i, raw) for i, raw in zip(part, raws) if raw is not None]
            self.mirror((s.task_id, s.status, s.num_upstreams_done) for s in states if s)
        return objs

    def queue_len(self) -> Op[int]:
        (n,) = yield from self.read(("ZCARD", self.keys.ready))
        return int(n)
