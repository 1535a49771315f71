"""The run and its tasks and arrays: creation, meta fields, registration, sealing the DAG."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from typing import Any

from swarm_redis.engine import commands as cmd
from swarm_redis.engine.commands import Call, TaskDef, text
from swarm_redis.engine.core.base import CHANGE_COST, CoreBase, int_attr, scalar_attr
from swarm_redis.engine.core.driver import Op
from swarm_redis.engine.validation import (
    check_detail_max,
    check_events_maxlen,
    check_int,
    check_limit,
    check_run_ids,
    check_run_status,
    check_task_status,
    check_upstreams,
    coerce_task_id,
    decode_sync_time,
    stored_int,
)
from swarm_redis.errors import InvalidInputError, InvalidTypeError, UnknownRunError

logger = logging.getLogger(__name__)


def _edge_cost(downstream_ids: tuple[int, ...]) -> int:
    """The chunk cost of one record: its inline ids, or one slice check per ``kids`` slice."""
    n = len(downstream_ids)
    return CHANGE_COST + (n if n <= cmd.KIDS_SLICE else -(-n // cmd.KIDS_SLICE))


class Registration(CoreBase):
    """Operations that create the run and register what it holds."""

    # --- run ----------------------------------------------------------------------------------

    def create(
        self, workflow_id: int, workflow_run_id: int, dag_id: int, limit: int, status: str
    ) -> Op[bool]:
        """Create the run unless it exists; True when this call created it."""
        workflow_id, workflow_run_id, dag_id = check_run_ids(workflow_id, workflow_run_id, dag_id)
        check_limit(limit, "max_concurrently_running")
        check_run_status(status)
        call = cmd.create_run(
            self.keys,
            self.caller(),
            workflow_id,
            workflow_run_id,
            dag_id,
            limit,
            status,
            self.events_maxlen,
            self.event_detail_max,
        )
        (reply,) = yield from self.scripts([call])
        self.observe(int(reply[0]), cmd.opt_text(reply[6]))
        return int(reply[1]) == 1

    def read_meta(self) -> Op[dict[str, str]]:
        """The run's meta hash; UnknownRunError when the run has none."""
        (raw,) = yield from self.read(("HGETALL", self.keys.meta))
        meta = {text(k): text(v) for k, v in dict(raw).items()}
        if not meta:
            raise UnknownRunError(
                f"workflow run {self.run_id} not found under prefix {self.keys.prefix!r}"
            )
        return meta

    def meta_field(self, name: str) -> Op[str | None]:
        (value,) = yield from self.read(("HGET", self.keys.meta, name))
        return cmd.opt_text(value)

    def attach(self) -> Op[tuple[int, int]]:
        """Load an existing run (UnknownRunError if absent); its (workflow id, dag id).

        Tasks and arrays that only Redis knows become TaskRecord and ArrayRecord objects.
        """
        meta = yield from self.read_meta()
        yield from self.load_all()
        return stored_int(meta.get("workflow_id")), stored_int(meta.get("dag_id"))

    def run_status(self) -> Op[str]:
        """The run status ("" when the run has none)."""
        return (yield from self.meta_field("status")) or ""

    def limit(self) -> Op[int]:
        """The workflow limit."""
        return stored_int((yield from self.meta_field("limit")))

    def last_sync(self) -> Op[datetime.datetime | str | None]:
        """Server time of the newest applied sync, exactly as it was given."""
        return decode_sync_time((yield from self.meta_field("last_sync")))

    def previously_complete(self) -> Op[int]:
        """``num_previously_complete`` (jobmon's count of tasks done in earlier runs)."""
        return stored_int((yield from self.meta_field("npc")))

    def set_previously_complete(self, value: Any) -> Op[None]:
        """Set ``num_previously_complete``: an int in 0..2^53-1 (bool refused)."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidTypeError(f"num_previously_complete must be an int, got {value!r}")
        yield from self.set_fields({"npc": value})

    def set_fields(self, fields: dict[str, Any]) -> Op[None]:
        """Plain meta fields: ``npc`` (0..2^53-1), ``events_maxlen``, ``detail_max``."""
        checks = {
            "npc": lambda v: check_int(v, "num_previously_complete"),
            "events_maxlen": check_events_maxlen,
            "detail_max": check_detail_max,
        }
        for name, value in fields.items():
            if name not in checks:
                raise InvalidInputError(f"meta field {name!r} cannot be set directly")
            checks[name](value)
        yield from self.scripts([cmd.set_fields(self.keys, self.caller(), fields)])

    # --- registration -------------------------------------------------------------------------

    def _task_def(self, task: Any) -> TaskDef:
        task_id = coerce_task_id(getattr(task, "task_id", None))
        status = check_task_status(getattr(task, "status", "G"), task_id=task_id)
        downstream: list[int] = []
        for child in getattr(task, "downstream_swarm_tasks", None) or ():
            downstream.append(
                coerce_task_id(getattr(child, "task_id", child), what="downstream id")
            )
        nup = scalar_attr(task, "num_upstreams", 0)
        done = scalar_attr(task, "num_upstreams_done", 0)
        check_upstreams(nup, done, task_id=task_id)
        return TaskDef(
            task_id=task_id,
            status=status,
            array_id=int_attr(task, "array_id", 0, f"array_id of task {task_id}"),
            num_upstreams=nup,
            num_upstreams_done=done,
            downstream_ids=tuple(downstream),
            resource_key=self.resource_key(task),
        )

    def add_tasks(self, tasks: Iterable[Any]) -> Op[None]:
        """Register tasks idempotently; objects become the registry's objects."""
        objs = list(tasks)
        defs = [self._task_def(t) for t in objs]  # validate everything before any write
        slices = self._slice_calls("new", [(d.task_id, d.downstream_ids) for d in defs])
        calls: list[Call] = [
            cmd.register(self.keys, self.caller(), chunk, ())
            for chunk in self.chunks(defs, lambda d: _edge_cost(d.downstream_ids))
        ]
        if not calls:
            return
        for obj, d in zip(objs, defs):
            self.tasks[d.task_id] = obj
        yield from self._one_by_one(slices)  # before the records that point at them
        replies = yield from self._one_by_one(calls)
        for d in defs:
            self.unsealed[d.task_id] = (d.num_upstreams, d.downstream_ids)
        for reply in replies:
            found = cmd.triples(reply[1])
            self.mirror(found)
            for task_id, _, _ in found:
                self.unsealed[task_id] = None  # registered before: its stored DAG is unknown

    def _slice_calls(self, mode: str, lists: list[tuple[int, tuple[int, ...]]]) -> list[Call]:
        """register_kids calls for the downstream lists too long for a record, one slice of
        up to KIDS_SLICE ids, sent before the records they belong to."""
        slices = [
            (task_id, k, ids)
            for task_id, kids in lists
            for k, ids in enumerate(cmd.kids_slices(kids), start=1)
        ]
        return [
            cmd.register_kids(self.keys, self.caller(), mode, chunk)
            for chunk in self.chunks(slices, lambda _: cmd.KIDS_SLICE)
        ]

    @staticmethod
    def _dag_def(task: Any) -> tuple[int, tuple[int, ...]]:
        downstream = tuple(
            coerce_task_id(getattr(child, "task_id", child), what="downstream id")
            for child in getattr(task, "downstream_swarm_tasks", None) or ()
        )
        return int_attr(task, "num_upstreams", 0, "num_upstreams"), downstream

    def seal(self) -> Op[int]:
        """Write the final DAG part of tasks whose objects changed since this replica
        registered them (or that existed already); the number of records changed.

        jobmon's resume path registers every task with ``add_task`` and only then sets
        ``downstream_swarm_tasks`` and ``num_upstreams`` on the registered objects. The first
        operation that uses edges or readiness (apply, propagate, the initial counts, enqueue,
        ack) calls this first: each task registered here since the last seal is compared with
        its object, and the changed ones are written with absolute values (``lua/redefine.lua``:
        the same records whichever replica sends them, and however often).
        """
        if not self.unsealed:
            return 0
        changed: list[tuple[int, int, tuple[int, ...]]] = []
        for task_id, sent in self.unsealed.items():
            obj = self.tasks.get(task_id)
            if obj is None:
                continue
            now = self._dag_def(obj)
            if sent is None or now[0] != sent[0] or sorted(now[1]) != sorted(sent[1]):
                changed.append((task_id, now[0], now[1]))
        slices = self._slice_calls("redef", [(t, kids) for t, _, kids in changed])
        calls: list[Call] = [
            cmd.redefine(self.keys, self.caller(), chunk)
            for chunk in self.chunks(changed, lambda item: _edge_cost(item[2]))
        ]
        written = 0
        refused: list[int] = []
        if calls:
            yield from self._one_by_one(slices)
            replies = yield from self._one_by_one(calls)
            for reply in replies:
                n, late = cmd.decode_redefine(reply)
                written += n
                refused += late
        if refused:
            logger.warning(
                "run %s: %d tasks got downstream tasks after their completion was propagated; "
                "those downstreams were not credited by them (first ids: %s)",
                self.run_id,
                len(refused),
                refused[:10],
            )
        self.unsealed.clear()
        return written

    def add_arrays(self, arrays: Iterable[Any]) -> Op[None]:
        """Register arrays; their limits overwrite the stored ones (as jobmon's add_array)."""
        objs = list(arrays)
        pairs = []
        for a in objs:
            array_id = check_int(getattr(a, "array_id", None), "array id")
            limit = check_limit(
                getattr(a, "max_concurrently_running", None),
                f"max_concurrently_running of array {array_id}",
            )
            pairs.append((array_id, limit))
        yield from self.scripts([cmd.register(self.keys, self.caller(), (), pairs)])
        for a, (array_id, _) in zip(objs, pairs):
            self.arrays[array_id] = a
