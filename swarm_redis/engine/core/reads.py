"""Reads of the run: tasks by id and status, counts, capacity, and the resource cache."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from swarm_redis.constants import ACTIVE_TASK_STATUSES, PENDING_TASK_STATUSES, TASK_STATUSES
from swarm_redis.engine import commands as cmd
from swarm_redis.engine.commands import text
from swarm_redis.engine.core.base import STATUS_PAGE, CoreBase
from swarm_redis.engine.core.driver import Op
from swarm_redis.engine.validation import (
    check_int,
    coerce_task_id,
    record_problem,
    stored_int,
)
from swarm_redis.errors import InvalidInputError, InvalidTypeError

_DECIMAL = re.compile(r"-?[0-9]+")


class Reads(CoreBase):
    """Operations that read the run (the resource cache writes once per hash)."""

    # --- reads ----------------------------------------------------------------------------------

    def get_task(self, task_id: Any) -> Op[Any]:
        tid = coerce_task_id(task_id)
        (raw,) = yield from self.read(("HGET", self.keys.task, tid))
        if raw is None:
            return None
        state = self.decode(tid, raw)
        if state is None:
            raise InvalidInputError(
                f"workflow run {self.run_id}: task {tid} has a corrupt record "
                f"({record_problem(raw)}): {text(raw)[:200]!r} (see swarm-redis verify)"
            )
        if tid not in self.tasks:
            yield from self.load([tid])
        obj = self.tasks[tid]
        self.mirror([(tid, state.status, state.num_upstreams_done)])
        return obj

    def tasks_in_status(self, status: str) -> Op[list[Any]]:
        """The tasks in ``status``, mirrors refreshed from the records read with them.

        A set of at most :data:`STATUS_PAGE` tasks is read in one script call: a snapshot. A
        larger one is read in pages (SSCAN inside ``read_status``, one round trip and a bounded
        Redis time each), so the answer is consistent per page, not as a whole: every task
        returned was in ``status`` when its page was read (set and record agree), every task
        that stayed in ``status`` for the whole read is returned once, and a task that entered
        or left it meanwhile may be returned or not.
        """
        if status not in TASK_STATUSES:
            return []
        found: dict[int, cmd.TaskState] = {}
        cursor = "0"
        while True:
            call = cmd.read_status(self.keys, self.caller(), status, cursor, STATUS_PAGE)
            (reply,) = yield from self.scripts([call])
            cursor, pairs = cmd.decode_status_page(reply)
            for task_id, raw in pairs:
                state = self.decode(task_id, raw)
                if state is not None:
                    found[state.task_id] = state
            if cursor == "0":
                break
        fresh = [s for s in found.values() if s.task_id not in self.tasks]
        fresh = yield from self.fill_slices(fresh)
        if fresh:  # records just read: no second read, only their missing descendants
            self._build(fresh)
            kids = [c for s in fresh for c in s.downstream_ids if c not in self.tasks]
            if kids:
                yield from self.load(kids)
                self._build(fresh)
        self.mirror((s.task_id, s.status, s.num_upstreams_done) for s in found.values())
        return [self.tasks[i] for i in found]

    def tasks_by_status(self, status: str) -> Op[set[Any]]:
        """:meth:`tasks_in_status` as a set (jobmon's ``get_tasks_by_status``)."""
        return set((yield from self.tasks_in_status(status)))

    def active_tasks(self) -> Op[set[Any]]:
        """The tasks in the active statuses (Q, I, O, R), one status set after the other."""
        out: set[Any] = set()
        for status in ACTIVE_TASK_STATUSES:
            out.update((yield from self.tasks_in_status(status)))
        return out

    def counts(self) -> Op[dict[str, int]]:
        """Tasks per status, plus ``ready``, ``claimed`` and ``tasks`` (all O(1) reads)."""
        replies = yield from self.read(
            *(("SCARD", self.keys.status_set(s)) for s in TASK_STATUSES),
            ("ZCARD", self.keys.ready),
            ("HLEN", self.keys.claims),
            ("HLEN", self.keys.task),
        )
        out = {s: int(n) for s, n in zip(TASK_STATUSES, replies)}
        out["ready"], out["claimed"], out["tasks"] = (int(n) for n in replies[-3:])
        return out

    def count_statuses(self, statuses: Sequence[str]) -> Op[int]:
        replies = yield from self.read(*(("SCARD", self.keys.status_set(s)) for s in statuses))
        return sum(int(n) for n in replies)

    def has_pending_work(self) -> Op[bool]:
        replies = yield from self.read(
            *(("SCARD", self.keys.status_set(s)) for s in PENDING_TASK_STATUSES),
            ("ZCARD", self.keys.ready),
            ("HLEN", self.keys.claims),
            ("HLEN", self.keys.fanout),  # completions whose fan-out is still being credited
        )
        return any(int(n) > 0 for n in replies)

    def all_tasks_final(self) -> Op[bool]:
        total, done, failed, claimed, fanout = yield from self.read(
            ("HLEN", self.keys.task),
            ("SCARD", self.keys.status_set("D")),
            ("SCARD", self.keys.status_set("F")),
            ("HLEN", self.keys.claims),
            ("HLEN", self.keys.fanout),
        )
        return int(total) == int(done) + int(failed) and int(claimed) == 0 and int(fanout) == 0

    def available_capacity(self) -> Op[int]:
        replies = yield from self.read(
            ("HGET", self.keys.meta, "limit"),
            ("HGET", self.keys.reserved, "run"),
            *(("SCARD", self.keys.status_set(s)) for s in ACTIVE_TASK_STATUSES),
        )
        # stored values that do not parse read as 0 (claim_batch refuses to claim on them)
        limit = stored_int(replies[0])
        used = stored_int(replies[1]) + sum(int(n) for n in replies[2:])
        return max(0, limit - used)

    def array_capacity(self, array_id: Any) -> Op[int]:
        aid = check_int(array_id, "array id")
        limit, active, reserved = yield from self.read(
            ("HGET", self.keys.arrays, aid),
            ("HGET", self.keys.active, aid),
            ("HGET", self.keys.reserved, aid),
        )
        if limit is None:
            return 0
        return max(0, stored_int(limit) - stored_int(active) - stored_int(reserved))

    def percent_done(self) -> Op[float]:
        total, done = yield from self.read(
            ("HLEN", self.keys.task), ("SCARD", self.keys.status_set("D"))
        )
        if int(total) == 0:
            return 0.0
        return round(int(done) / int(total) * 100, 2)

    # --- resource cache -------------------------------------------------------------------------

    def cache_resources(self, resource_hash: Any, value: Any) -> Op[Any]:
        key = _resource_field(resource_hash)
        if key in self.resources:
            return self.resources[key]
        encoded = self.codec.encode(value)  # raises TypeError naming the type, before writing
        (reply,) = yield from self.scripts(
            [cmd.cache_resources(self.keys, self.caller(), key, encoded)]
        )
        if int(reply[1]) == 1:
            self.resources[key] = value
        else:
            self.resources[key] = self.codec.decode(_bytes(reply[2]))
        return self.resources[key]

    def cached_resources(self, resource_hash: Any) -> Op[Any]:
        key = _resource_field(resource_hash)
        if key in self.resources:
            return self.resources[key]
        (raw,) = yield from self.read(("HGET", self.keys.resources, key))
        if raw is None:
            return None
        self.resources[key] = self.codec.decode(_bytes(raw))
        return self.resources[key]

    def resource_keys(self) -> Op[list[int | str]]:
        """The cached resource hashes: ints where they are decimal, else the stored text."""
        (raw,) = yield from self.read(("HKEYS", self.keys.resources))
        keys = [text(k) for k in raw]
        return [int(k) if _DECIMAL.fullmatch(k) else k for k in keys]


def _resource_field(resource_hash: Any) -> str:
    if isinstance(resource_hash, bool) or not isinstance(resource_hash, (int, str)):
        raise InvalidTypeError(
            f"resource hash must be an int or str, got {type(resource_hash).__name__}"
        )
    key = str(resource_hash)
    if not 1 <= len(key.encode("utf-8", "surrogatepass")) <= 1024:
        raise InvalidInputError(f"resource hash must be 1..1024 bytes, got {len(key)} characters")
    return key


def _bytes(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)
