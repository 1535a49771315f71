"""Updates: status changes, completions counted once and their fan-outs, ready tasks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarm_redis.engine import commands as cmd
from swarm_redis.engine.commands import Call, UpdateTail
from swarm_redis.engine.core.base import CHANGE_COST
from swarm_redis.engine.core.driver import Op
from swarm_redis.engine.core.registration import Registration
from swarm_redis.engine.validation import (
    check_flag,
    check_int,
    check_limit,
    check_run_status,
    check_sync_stamp,
    check_task_status,
    checked_changes,
    coerce_task_id,
    encode_sync_time,
    sync_stamp,
)
from swarm_redis.errors import InvalidTypeError
from swarm_redis.update import StateUpdate


@dataclass
class ApplyResult:
    """What one ``apply`` did: the changed tasks, and those it made ready and queued."""

    changed: set[Any] = field(default_factory=set)
    ready: list[Any] = field(default_factory=list)
    run_status: str | None = None
    version: int = 0


class Writes(Registration):
    """Operations that apply updates and propagate completions."""

    # --- updates --------------------------------------------------------------------------------

    def _changes(self, update: StateUpdate) -> list[tuple[int, str]]:
        return checked_changes(update.task_statuses.items())

    def _tail(self, update: StateUpdate) -> UpdateTail:
        limit = update.max_concurrently_running
        if limit is not None:
            check_limit(limit, "max_concurrently_running")
        array_limits = tuple(
            (
                check_int(a, "array id"),
                check_limit(v, f"limit of array {a!r}"),
            )
            for a, v in update.array_limits.items()
        )
        run_status = update.workflow_run_status
        if run_status is not None:
            check_run_status(run_status)
        sync = update.sync_time
        return UpdateTail(
            limit=limit,
            array_limits=array_limits,
            run_status=run_status,
            sync_us=self.sync_us(sync) if sync is not None else None,  # validates: runs first
            sync_encoded=encode_sync_time(sync) if sync is not None else None,
        )

    def sync_us(self, sync_time: Any) -> int:
        """The stamp of a sync time: refused before 1970 or beyond ``max_clock_skew`` ahead."""
        return check_sync_stamp(sync_stamp(sync_time), sync_time, self.max_clock_skew)

    def _completion_cost(self, task_id: int) -> int:
        """The chunk units of one propagated completion: the change and its known edges."""
        children = getattr(self.tasks.get(task_id), "downstream_swarm_tasks", None)
        try:
            return CHANGE_COST + (len(children) if children is not None else 3)
        except TypeError:
            return CHANGE_COST + 3

    def update_task_status(self, task_id: Any, status: Any) -> Op[bool]:
        """Set one task's status; True if the task exists and its status changed."""
        tid = coerce_task_id(task_id)
        result = yield from self.apply(StateUpdate(task_statuses={tid: status}))
        return bool(result.changed)

    def apply(self, update: StateUpdate, propagate: bool | None = None) -> Op[ApplyResult]:
        """Apply a StateUpdate in bounded chunks; run-level fields go with the last chunk."""
        update = StateUpdate.coerce(update)  # ours, or jobmon's (any object with its fields)
        prop = self.propagate_on_apply if propagate is None else check_flag(propagate, "propagate")
        changes = self._changes(update)  # validate everything before the first write
        tail = self._tail(update)
        stamp = tail.sync_us
        if update.is_empty():
            self.last_ready = []
            return ApplyResult(version=self.seen)
        yield from self.seal()
        chunks: list[list[tuple[int, str]]] = [[]]
        cost = 0
        cost_of = self._completion_cost
        for change in changes:
            # only a propagated completion costs more than CHANGE_COST: no call for the others
            step = cost_of(change[0]) if prop and change[1] == "D" else CHANGE_COST
            if chunks[-1] and cost + step > self.chunk_budget:
                chunks.append([])
                cost = 0
            chunks[-1].append(change)
            cost += step
        decoded: list[cmd.ApplyReply] = []
        for i, c in enumerate(chunks):  # one round trip each: other clients are served in between
            call = cmd.apply_update(
                self.keys,
                self.caller(),
                propagate=prop,
                stamp=stamp,
                changes=c,
                tail=tail if i == len(chunks) - 1 else None,
            )
            (reply,) = yield from self.scripts([call])
            d = cmd.decode_apply(reply)
            decoded.append(d)
            if i == len(chunks) - 1:
                run_status = d.run_status
            # a big fan-out is credited one bounded slice per call, before the next chunk
            decoded += yield from self.finish_fanouts(d.unfinished, enqueue=True)
        result = yield from self.absorb(decoded)
        result.run_status = run_status
        if tail.array_limits:
            yield from self.read_arrays()
        self.note_ready(result.ready)
        return result

    def note_ready(self, ready: list[Any]) -> None:
        """Remember the tasks an apply of this object made ready and queued (see propagate)."""
        self.last_ready = ready
        for obj in ready:
            self.unreported[int(obj.task_id)] = obj

    def absorb(self, decoded: Sequence[cmd.ApplyReply]) -> Op[ApplyResult]:
        changed_ids = [c[0] for d in decoded for c in d.changed]
        ready_ids = [r for d in decoded for r in d.ready]
        yield from self.ensure_loaded(changed_ids + ready_ids)
        result = ApplyResult(version=self.seen)
        tasks = self.tasks
        for d in decoded:
            self.mirror((task_id, status, done) for task_id, status, done, _ in d.changed)
            self.mirror(d.touched)
        result.changed.update(tasks[i] for i in changed_ids if i in tasks)
        result.ready = [tasks[r] for r in ready_ids if r in tasks]
        return result

    def propagate(self, completed: Iterable[Any], *, enqueue: bool) -> Op[list[Any]]:
        """Count completions once; the tasks that became ready (queued too with ``enqueue``).

        Also reported, once: downstreams of ``completed`` that an apply of this object already
        made ready and queued (``propagate_on_apply``). jobmon's orchestrator validates the
        resources of exactly the tasks this returns, then queues them (a no-op for those).
        """
        ids = [coerce_task_id(getattr(t, "task_id", t)) for t in completed]
        yield from self.seal()
        ready = yield from self._propagate(ids, enqueue=enqueue)
        if not self.unreported:
            return ready
        out = {int(t.task_id): t for t in ready}
        for tid in ids:
            for child in getattr(self.tasks.get(tid), "downstream_swarm_tasks", None) or ():
                obj = self.unreported.pop(int(getattr(child, "task_id", child)), None)
                if obj is not None:
                    out.setdefault(int(obj.task_id), obj)
        return list(out.values())

    def _propagate(self, ids: list[int], *, enqueue: bool) -> Op[list[Any]]:
        calls: list[Call] = [
            cmd.propagate(self.keys, self.caller(), chunk, enqueue=enqueue)
            for chunk in self.chunks(ids, self._completion_cost)
        ]
        if not calls:
            return []
        replies = yield from self._one_by_one(calls)
        decoded = [cmd.decode_propagate(r) for r in replies]
        unfinished = [i for d in decoded for i in d.unfinished]
        decoded += yield from self.finish_fanouts(unfinished, enqueue=enqueue)
        result = yield from self.absorb(decoded)
        return result.ready

    def finish_fanouts(self, task_ids: Sequence[int], *, enqueue: bool) -> Op[list[cmd.ApplyReply]]:
        """Credit the rest of partly credited fan-outs, one bounded script call per slice.

        Each call advances the stored progress (K.fanout) atomically with its credits, so a
        caller that dies between calls leaves work that the next call or ``reconcile`` finishes,
        and nothing is counted twice.
        """
        out: list[cmd.ApplyReply] = []
        pending = list(dict.fromkeys(task_ids))
        while pending:
            call = cmd.propagate(self.keys, self.caller(), pending, enqueue=enqueue)
            (reply,) = yield from self.scripts([call])
            d = cmd.decode_propagate(reply)
            out.append(d)
            pending = list(dict.fromkeys(d.unfinished))
        return out

    def compute_initial_counts(self) -> Op[None]:
        """Propagate every DONE task through the once-only gate (idempotent)."""
        yield from self.seal()
        done = yield from self.scan_ids(self.keys.status_set("D"))
        for at in range(0, len(done), 1000):
            yield from self._propagate(done[at : at + 1000], enqueue=False)

    def set_status_map(self, buckets: Mapping[str, Iterable[Any]]) -> Op[None]:
        """Register every task of bucket S with status S; move known ones there (no propagation)."""
        wanted: dict[int, tuple[str, Any]] = {}
        for status, tasks in buckets.items():
            check_task_status(status)
            if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Iterable):
                raise InvalidTypeError(
                    f"_task_status_map[{status!r}] must be a collection of tasks, "
                    f"got {type(tasks).__name__}"
                )
            for task in tasks:
                wanted[coerce_task_id(getattr(task, "task_id", None))] = (status, task)
        yield from self.add_tasks([task for _, task in wanted.values()])  # validates first
        moves = {
            tid: status
            for tid, (status, task) in wanted.items()
            if getattr(self.tasks.get(tid), "status", None) != status
        }
        if moves:
            yield from self.apply(StateUpdate(task_statuses=moves), propagate=False)

    def set_last_sync(self, value: Any) -> Op[None]:
        """Apply a sync time (None: nothing to do, as jobmon assigns None before the first sync)."""
        if value is not None:
            yield from self.apply(StateUpdate(sync_time=value))
