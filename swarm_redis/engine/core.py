"""The state logic, written once for both fronts (sans-I/O).

Every operation is a generator: it yields a list of :mod:`swarm_redis.engine.commands` calls, receives
their replies, and finally returns its result. :class:`swarm_redis.state.RedisSwarmState` drives
the generators with a blocking client, :class:`swarm_redis.aio.AsyncRedisSwarmState` with an
asyncio one; neither holds logic of its own.

The core also keeps the local identity registry (task id -> the caller's object) and refreshes
the mirrored fields (``status``, ``num_upstreams_done``) from every reply that carries them.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from swarm_redis.codec import DefaultCodec, ResourceCodec, resource_digest
from swarm_redis.constants import ACTIVE_TASK_STATUSES, PENDING_TASK_STATUSES, TASK_STATUSES
from swarm_redis.engine import commands as cmd
from swarm_redis.engine.commands import Call, Caller, Command, ScriptCall, TaskDef, UpdateTail, text
from swarm_redis.engine.keys import RunKeys
from swarm_redis.engine.replies import hash_items, score_pairs
from swarm_redis.engine.validation import (
    DEFAULT_MAX_CLOCK_SKEW_S,
    MAX_SAFE_INT,
    check_clock_skew,
    check_detail_max,
    check_events_maxlen,
    check_int,
    check_limit,
    check_run_ids,
    check_run_status,
    check_sync_stamp,
    check_task_status,
    check_upstreams,
    coerce_task_id,
    decode_sync_time,
    encode_sync_time,
    record_problem,
    stored_int,
    sync_stamp,
)
from swarm_redis.errors import InvalidInputError, InvalidTypeError, StateLostError, UnknownRunError
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.update import StateUpdate

logger = logging.getLogger(__name__)
_STATUS_SET = frozenset(TASK_STATUSES)
_DECIMAL = re.compile(r"-?[0-9]+")

T = TypeVar("T")
X = TypeVar("X")
#: An operation: yields lists of calls, receives their replies, returns a T.
Op = Generator[list[Call], list[Any], T]

#: Default Redis work per script call. A task costs CHANGE_COST units (about 10 µs of Redis
#: time for a status change or a registration) plus one unit per downstream edge it credits
#: (about 4 µs): 1,000 units keep one call near 5-10 ms. Chunks go one round trip each, so other
#: clients are served between them and never wait much longer than one chunk.
DEFAULT_CHUNK_BUDGET = 1000
CHANGE_COST = 2
_LOAD_BATCH = 5000
#: Errors after which a script call may or may not have run (its reply never arrived).
IN_DOUBT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,  # socket errors and timeouts redis-py did not wrap
    asyncio.CancelledError,  # the awaiting task was cancelled, e.g. by asyncio.timeout()
    KeyboardInterrupt,
)
#: Script calls in doubt remembered per core (the oldest is forgotten first).
IN_DOUBT_MAX = 64
#: Tasks per enqueue / dequeue script call: about 3-4 ms of Redis CPU each (a queued task costs
#: two ZADDs and a SADD, ~13 µs; a dequeued one ~8 µs).
ENQUEUE_CHUNK = 150
DEQUEUE_CHUNK = 250
#: Members per read_status page (~3 µs each with its record), and the largest status set read
#: whole, as one snapshot.
STATUS_PAGE = 1000
#: Entries per ZRANGE page of the ready queue (a plain read, ~0.2 µs each).
QUEUE_PAGE = 5000


@dataclass
class ApplyResult:
    """What one ``apply`` did: the changed tasks, and those it made ready and queued."""

    changed: set[Any] = field(default_factory=set)
    ready: list[Any] = field(default_factory=list)
    run_status: str | None = None
    version: int = 0


def _int_attr(obj: Any, name: str, default: int, what: str) -> int:
    """An int definition attribute in 0..2^53-1 (absent: ``default``).

    A value that is not even a scalar (a test double such as ``MagicMock``, which invents every
    attribute it is asked for) counts as absent, as in jobmon's own unit tests; every scalar and
    None goes through the range check.
    """
    return check_int(_scalar_attr(obj, name, default), what)


def _scalar_attr(obj: Any, name: str, default: int) -> Any:
    """``getattr(obj, name, default)``, with a non-scalar value read as absent (see _int_attr)."""
    value = getattr(obj, name, default)
    if value is not None and not isinstance(value, (int, float, str, bytes)):
        return default
    return value


def _set_mirror(obj: Any, status: str | None, done: int) -> None:
    try:
        if status is not None:
            obj.status = status
        obj.num_upstreams_done = done
    except AttributeError:  # a read-only stand-in: nothing to mirror into
        pass


class StateCore:
    """Keys, local registry, version tracking and every operation of one run."""

    def __init__(
        self,
        keys: RunKeys,
        *,
        codec: ResourceCodec | None = None,
        chunk_budget: int = DEFAULT_CHUNK_BUDGET,
        propagate_on_apply: bool = True,
        events_maxlen: int = 10000,
        event_detail_max: int = 16,
        max_clock_skew: Any = DEFAULT_MAX_CLOCK_SKEW_S,
    ) -> None:
        chunk_budget = check_int(chunk_budget, "chunk_budget", lo=1, hi=10_000_000)
        events_maxlen = check_events_maxlen(events_maxlen)
        event_detail_max = check_detail_max(event_detail_max)
        #: A sync_time more than this many seconds ahead of this process's clock is refused.
        self.max_clock_skew = check_clock_skew(max_clock_skew)
        self.bad_records: dict[str, str] = {}  # unparseable task records seen (id -> raw)
        self.keys = keys
        self.run_id = keys.run_id
        self.codec: ResourceCodec = codec or DefaultCodec()
        self.chunk_budget = chunk_budget
        self.propagate_on_apply = propagate_on_apply
        self.events_maxlen = events_maxlen
        self.event_detail_max = event_detail_max
        self.seen = 0
        self.token = ""  # the run's creation token, once known: a recreated run has another
        self.actor = "-"
        self.tasks: dict[int, Any] = {}
        self.arrays: dict[int, Any] = {}
        self.resources: dict[str, Any] = {}
        self.last_ready: list[Any] = []
        #: retry key -> request id of script calls that failed in doubt (see ``scripts``)
        self.in_doubt: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        #: (requested replica id, ttl) and the Replica of a join_replica that failed in doubt
        self.join_in_doubt: tuple[tuple[str | None, int], Any] | None = None
        # DAG part (number of upstreams, downstream ids) of tasks as this replica registered
        # them, until seal() has compared them with the objects (see seal)
        # (None: the task existed, its stored DAG part is unknown here)
        self.unsealed: dict[int, tuple[int, tuple[int, ...]] | None] = {}
        # tasks this object's applies made ready and queued, until propagate() reports them
        self.unreported: dict[int, Any] = {}

    # --- plumbing -----------------------------------------------------------------------------

    def caller(self) -> Caller:
        return Caller(self.seen, self.actor, token=self.token)

    def observe(self, version: int, token: str | None = None) -> None:
        """Remember the highest write version seen; a lower one means Redis lost writes.

        ``token`` is the run's creation token when the reply carries it: another token than the
        one already known means the run's keys were lost and the run created again.
        """
        if version < self.seen:
            raise StateLostError(self.run_id, self.seen, version)
        if token:
            if self.token and token != self.token:
                raise StateLostError(self.run_id, self.seen, version, recreated=True)
            self.token = token
        self.seen = version

    def scripts(self, calls: list[Call]) -> Op[list[Any]]:
        """Script calls whose replies carry the run's version first.

        A call that fails in doubt (timeout, lost connection, cancellation: it may have run) is
        remembered with its request id; the next call with the same script and arguments is
        taken as its retry and sent with that id, so Redis answers the first call's reply
        (``lua/includes/idem.lua``) instead of running it again. Any answer clears it.
        """
        if self.in_doubt:
            calls = [self._as_retry(c) for c in calls]
        try:
            replies = yield calls
        except IN_DOUBT_ERRORS:
            for c in calls:
                if isinstance(c, ScriptCall):
                    key = cmd.retry_key(c)
                    self.in_doubt.pop(key, None)  # re-inserted last: forgotten last
                    self.in_doubt[key] = cmd.request_id(c)
            while len(self.in_doubt) > IN_DOUBT_MAX:
                try:
                    self.in_doubt.popitem(last=False)
                except KeyError:  # emptied by another thread meanwhile
                    break
            raise
        except BaseException:
            self._settled(calls)
            raise
        self._settled(calls)
        for reply in replies:
            self.observe(int(reply[0]))
        return replies

    def _as_retry(self, call: Call) -> Call:
        if isinstance(call, ScriptCall):
            rid = self.in_doubt.get(cmd.retry_key(call))
            if rid is not None:
                return cmd.with_request_id(call, rid)
        return call

    def _settled(self, calls: list[Call]) -> None:
        if self.in_doubt:
            for c in calls:
                if isinstance(c, ScriptCall):
                    self.in_doubt.pop(cmd.retry_key(c), None)

    def mirror(self, found: Iterable[tuple[int, str | None, int]]) -> None:
        """Refresh the mirrored fields of known tasks from (task id, status, done) triples.

        A status of None refreshes the done count alone; unknown ids are skipped.
        """
        for task_id, status, done in found:
            obj = self.tasks.get(task_id)
            if obj is not None:
                _set_mirror(obj, status, done)

    def chunks(self, items: Iterable[X], cost: Callable[[X], int]) -> list[list[X]]:
        """``items`` in order, cut after each item that brings its chunk to ``chunk_budget``.

        One chunk is one script call: its Redis time stays near the budget.
        """
        out: list[list[X]] = []
        chunk: list[X] = []
        total = 0
        for item in items:
            chunk.append(item)
            total += cost(item)
            if total >= self.chunk_budget:
                out.append(chunk)
                chunk, total = [], 0
        if chunk:
            out.append(chunk)
        return out

    def _one_by_one(self, calls: list[Call]) -> Op[list[Any]]:
        """Bounded script calls, one round trip each, so other clients get served between them.

        (Redis runs every command of a pipeline it has read before it serves another client.)
        """
        replies: list[Any] = []
        for call in calls:
            replies += yield from self.scripts([call])
        return replies

    def read(self, *commands: tuple[Any, ...]) -> Op[list[Any]]:
        """Plain reads plus the run's version, in one round trip."""
        calls: list[Call] = [Command(("HMGET", self.keys.meta, "version", "token"))]
        calls += [Command(c) for c in commands]
        replies = yield calls
        version, token = replies[0]
        self.observe(int(version or 0), cmd.opt_text(token))
        return replies[1:]

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

    def set_last_sync(self, value: Any) -> Op[None]:
        """Apply a sync time (None: nothing to do, as jobmon assigns None before the first sync)."""
        if value is not None:
            yield from self.apply(StateUpdate(sync_time=value))

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
        nup = _scalar_attr(task, "num_upstreams", 0)
        done = _scalar_attr(task, "num_upstreams_done", 0)
        check_upstreams(nup, done, task_id=task_id)
        return TaskDef(
            task_id=task_id,
            status=status,
            array_id=_int_attr(task, "array_id", 0, f"array_id of task {task_id}"),
            num_upstreams=nup,
            num_upstreams_done=done,
            downstream_ids=tuple(downstream),
            resource_key=self.resource_key(task),
        )

    def add_tasks(self, tasks: Iterable[Any]) -> Op[None]:
        """Register tasks idempotently; objects become the registry's objects."""
        objs = list(tasks)
        defs = [self._task_def(t) for t in objs]  # validate everything before any write
        calls: list[Call] = [
            cmd.register(self.keys, self.caller(), chunk, ())
            for chunk in self.chunks(defs, lambda d: CHANGE_COST + len(d.downstream_ids))
        ]
        if not calls:
            return
        for obj, d in zip(objs, defs):
            self.tasks[d.task_id] = obj
        replies = yield from self._one_by_one(calls)
        for d in defs:
            self.unsealed[d.task_id] = (d.num_upstreams, d.downstream_ids)
        for reply in replies:
            found = cmd.triples(reply[1])
            self.mirror(found)
            for task_id, _, _ in found:
                self.unsealed[task_id] = None  # registered before: its stored DAG is unknown

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

    @staticmethod
    def _dag_def(task: Any) -> tuple[int, tuple[int, ...]]:
        downstream = tuple(
            coerce_task_id(getattr(child, "task_id", child), what="downstream id")
            for child in getattr(task, "downstream_swarm_tasks", None) or ()
        )
        return _int_attr(task, "num_upstreams", 0, "num_upstreams"), downstream

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
        calls: list[Call] = [
            cmd.redefine(self.keys, self.caller(), chunk)
            for chunk in self.chunks(changed, lambda item: CHANGE_COST + len(item[2]))
        ]
        written = 0
        refused: list[int] = []
        if calls:
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

    # --- objects from Redis ----------------------------------------------------------------------

    def _build(self, states: Sequence[cmd.TaskState]) -> None:
        """Registry records for tasks known only to Redis, linked to their downstreams."""
        for s in states:
            if s.task_id not in self.tasks:
                self.tasks[s.task_id] = TaskRecord(
                    s.task_id, s.array_id, s.status, s.num_upstreams, s.num_upstreams_done
                )
        for s in states:
            rec = self.tasks[s.task_id]
            if isinstance(rec, TaskRecord):
                rec.downstream_swarm_tasks = {
                    self.tasks[c] for c in s.downstream_ids if c in self.tasks
                }

    def decode(self, task_id: Any, raw: Any) -> cmd.TaskState | None:
        """A stored record, or None (logged, kept in ``bad_records``) when it does not parse.

        Never trust what is stored: one corrupt record must not stop a replica from attaching;
        the scripts refuse to touch it and ``swarm-redis verify`` reports it as ``bad_record``.
        """
        tid: int | None = None
        try:
            tid = task_id if type(task_id) is int else int(text(task_id))
            state = cmd.decode_record(tid, raw)
        except (ValueError, IndexError, UnicodeDecodeError):
            pass
        else:  # the fast path; record_problem (the regex verify uses) only for the message
            if (
                state.status in _STATUS_SET
                and 0 <= state.num_upstreams_done <= MAX_SAFE_INT
                and 0 <= state.num_upstreams <= MAX_SAFE_INT
                and 0 <= state.array_id <= MAX_SAFE_INT
            ):
                return state
        problem = record_problem(raw) or "a number is out of range"
        shown = text(raw)[:200] if isinstance(raw, (str, bytes)) else repr(raw)
        key = text(task_id)
        if self.bad_records.get(key) != shown:
            logger.warning(
                "workflow run %s: task %s has a corrupt record (%s), skipped: %r",
                self.run_id,
                text(task_id),
                problem,
                shown,
            )
        self.bad_records[key] = shown
        return None

    def load(self, task_ids: Iterable[int]) -> Op[None]:
        """Load tasks missing from the registry, and their descendants (to link them)."""
        pending = [i for i in dict.fromkeys(task_ids) if i not in self.tasks]
        loaded: list[cmd.TaskState] = []
        while pending:
            batch, pending = pending[:_LOAD_BATCH], pending[_LOAD_BATCH:]
            (raws,) = yield from self.read(("HMGET", self.keys.task, *batch))
            decoded = [self.decode(i, raw) for i, raw in zip(batch, raws) if raw is not None]
            fresh = [s for s in decoded if s is not None]
            loaded += fresh
            self._build(fresh)
            pending += [c for s in fresh for c in s.downstream_ids if c not in self.tasks]
        self._build(loaded)

    def load_all(self, *, refresh: bool = False) -> Op[None]:
        """Load every task of the run that the registry lacks (attach, full views).

        With ``refresh`` every record is read and the mirrors of known objects refreshed too.
        """
        (count,) = yield from self.read(("HLEN", self.keys.task))
        if int(count) <= len(self.tasks) and not refresh:
            return
        states: list[cmd.TaskState] = []
        cursor: Any = 0
        while True:
            (page,) = yield from self.read(("HSCAN", self.keys.task, cursor, "COUNT", _LOAD_BATCH))
            cursor, entries = page
            states += [
                s
                for s in (self.decode(text(k), v) for k, v in hash_items(entries))
                if s is not None
            ]
            if int(cursor) == 0:
                break
        self._build(states)
        self.mirror((s.task_id, s.status, s.num_upstreams_done) for s in states)
        (raw_arrays,) = yield from self.read(("HGETALL", self.keys.arrays))
        self._absorb_arrays(raw_arrays)

    def objects(self, task_ids: Sequence[int]) -> Op[list[Any]]:
        if any(i not in self.tasks for i in task_ids):
            yield from self.load(task_ids)
        return [self.tasks[i] for i in task_ids if i in self.tasks]

    def _absorb_arrays(self, raw: Any) -> dict[int, int]:
        limits = {int(text(k)): int(text(v)) for k, v in dict(raw).items()}
        for array_id, limit in limits.items():
            obj = self.arrays.get(array_id)
            if obj is None:
                self.arrays[array_id] = ArrayRecord(array_id, limit)
            else:
                try:
                    obj.max_concurrently_running = limit
                except AttributeError:
                    pass
        return limits

    def read_arrays(self) -> Op[dict[int, int]]:
        """Every registered array's limit; refreshes the local array objects."""
        (raw,) = yield from self.read(("HGETALL", self.keys.arrays))
        return self._absorb_arrays(raw)

    def all_arrays(self) -> Op[dict[int, Any]]:
        """Every registered array: id -> its object, limits refreshed."""
        limits = yield from self.read_arrays()
        return {a: self.arrays[a] for a in limits}

    def all_tasks(self) -> Op[dict[int, Any]]:
        """Every task of the run: id -> its object, loaded or refreshed from the records."""
        yield from self.load_all(refresh=True)
        return dict(self.tasks)

    def task_count(self) -> Op[int]:
        """How many tasks the run has."""
        (n,) = yield from self.read(("HLEN", self.keys.task))
        return int(n)

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
        _set_mirror(obj, state.status, state.num_upstreams_done)
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
        limit = int(replies[0] or 0)
        used = int(replies[1] or 0) + sum(int(n) for n in replies[2:])
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
        return max(0, int(limit) - int(active or 0) - int(reserved or 0))

    def percent_done(self) -> Op[float]:
        total, done = yield from self.read(
            ("HLEN", self.keys.task), ("SCARD", self.keys.status_set("D"))
        )
        if int(total) == 0:
            return 0.0
        return round(int(done) / int(total) * 100, 2)

    # --- updates --------------------------------------------------------------------------------

    def _changes(self, update: StateUpdate) -> list[tuple[int, str]]:
        changes = []
        for task_id, status in update.task_statuses.items():
            tid = coerce_task_id(task_id)
            changes.append((tid, check_task_status(status, task_id=tid)))
        return changes

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

    def _cost(self, task_id: int, status: str, propagate: bool) -> int:
        if not propagate or status != "D":
            return CHANGE_COST
        obj = self.tasks.get(task_id)
        children = getattr(obj, "downstream_swarm_tasks", None) if obj is not None else None
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
        prop = self.propagate_on_apply if propagate is None else propagate
        changes = self._changes(update)  # validate everything before the first write
        tail = self._tail(update)
        stamp = tail.sync_us
        if update.is_empty():
            self.last_ready = []
            return ApplyResult(version=self.seen)
        yield from self.seal()
        chunks: list[list[tuple[int, str]]] = [[]]
        cost = 0
        for change in changes:
            step = self._cost(change[0], change[1], prop)
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
        yield from self.objects(changed_ids + ready_ids)
        result = ApplyResult(version=self.seen)
        for d in decoded:
            self.mirror((task_id, status, done) for task_id, status, done, _ in d.changed)
            result.changed.update(self.tasks[c[0]] for c in d.changed if c[0] in self.tasks)
            self.mirror((task_id, status, done) for task_id, done, status in d.touched)
            result.ready += [self.tasks[r] for r in d.ready if r in self.tasks]
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
            for chunk in self.chunks(ids, lambda tid: self._cost(tid, "D", True))
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
        cursor: Any = 0
        while True:
            (page,) = yield from self.read(
                ("SSCAN", self.keys.status_set("D"), cursor, "COUNT", 1000)
            )
            cursor, members = page
            ids = [int(text(m)) for m in members]
            if ids:
                yield from self._propagate(ids, enqueue=False)
            if int(cursor) == 0:
                return

    # --- queue ----------------------------------------------------------------------------------

    def resource_key(self, task: Any) -> str:
        """The key claim_batch groups by: a stable digest of the task's current resources."""
        resources = getattr(task, "current_task_resources", None)
        if resources is None:
            return ""
        try:
            return format(resource_digest(resources, self.codec), "x")
        except TypeError:
            return ""

    def enqueue(self, tasks: Sequence[Any], *, front: bool) -> Op[list[Any]]:
        """Queue tasks at most once (unknown tasks are registered first); the ones queued.

        Sent in calls of at most :data:`ENQUEUE_CHUNK` tasks, one round trip each. An id given
        twice counts once, at its first place, with the last non-empty resource key given for
        it (as one call would). At the front the chunks go last first, so the given order is
        the queue order at the end, as with one call.
        """
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
        while len(found) < n:
            want = min(DEQUEUE_CHUNK, n - len(found))
            (reply,) = yield from self.scripts([cmd.dequeue(self.keys, self.caller(), want)])
            got = cmd.triples(reply[1])
            found += got
            remaining = int(reply[2])
            if len(got) < want or remaining == 0:
                break
        objs = yield from self.objects([t[0] for t in found])
        self.mirror(found)
        return objs, remaining

    def queue_ids(self, start: int = 0, stop: int = -1) -> Op[list[int]]:
        """Queue entries ``start``..``stop`` (ranks, inclusive, negative from the end).

        Up to :data:`QUEUE_PAGE` entries are one ZRANGE; a longer range is read in pages
        keyed by position (score), so each read stays short. Between pages the queue may
        change: entries pushed at the front meanwhile are not seen, removed ones not returned,
        and the order of what is returned is the queue order.
        """
        (n,) = yield from self.read(("ZCARD", self.keys.ready))
        first = start + n if start < 0 else start
        last = stop + n if stop < 0 else stop
        first, last = max(first, 0), min(last, n - 1)
        if last < first:
            return []
        if last - first < QUEUE_PAGE:
            (raw,) = yield from self.read(("ZRANGE", self.keys.ready, first, last))
            return [int(text(x)) for x in raw]
        out: list[int] = []
        (raw,) = yield from self.read(
            ("ZRANGE", self.keys.ready, first, first + QUEUE_PAGE - 1, "WITHSCORES")
        )
        want = last - first + 1
        while True:
            pairs = score_pairs(raw)
            out += [int(text(m)) for m, _ in pairs[: want - len(out)]]
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
        for i in range(0, len(ids), _LOAD_BATCH):
            part = ids[i : i + _LOAD_BATCH]
            (raws,) = yield from self.read(("HMGET", self.keys.task, *part))
            states = [self.decode(i, raw) for i, raw in zip(part, raws) if raw is not None]
            self.mirror((s.task_id, s.status, s.num_upstreams_done) for s in states if s)
        return objs

    def queue_len(self) -> Op[int]:
        (n,) = yield from self.read(("ZCARD", self.keys.ready))
        return int(n)

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


def run_sync(execute: Callable[[list[Call]], list[Any]], op: Op[T]) -> T:
    """Drive an operation with a blocking ``execute``."""
    try:
        calls = next(op)
        while True:
            try:
                replies = execute(calls)
            except BaseException as exc:  # the operation sees it (remembers calls in doubt)
                calls = op.throw(exc)
            else:
                calls = op.send(replies)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(execute: Callable[[list[Call]], Awaitable[list[Any]]], op: Op[T]) -> T:
    """Drive an operation with an awaitable ``execute`` (the asyncio front)."""
    try:
        calls = next(op)
        while True:
            try:
                replies = await execute(calls)
            except BaseException as exc:  # the operation sees it (remembers calls in doubt)
                calls = op.throw(exc)
            else:
                calls = op.send(replies)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
