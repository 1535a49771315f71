"""The core's plumbing: the registry, version tracking, script calls and reads, chunking."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from swarm_redis.codec import DefaultCodec, ResourceCodec, resource_digest
from swarm_redis.constants import TASK_STATUSES
from swarm_redis.engine import commands as cmd
from swarm_redis.engine.commands import Call, Caller, Command, ScriptCall, text
from swarm_redis.engine.core.driver import Op
from swarm_redis.engine.keys import RunKeys
from swarm_redis.engine.replies import hash_items
from swarm_redis.engine.validation import (
    DEFAULT_MAX_CLOCK_SKEW_S,
    MAX_SAFE_INT,
    check_clock_skew,
    check_detail_max,
    check_events_maxlen,
    check_flag,
    check_int,
    record_problem,
    stored_int,
)
from swarm_redis.errors import InvalidInputError, StateLostError
from swarm_redis.records import ArrayRecord, TaskRecord

logger = logging.getLogger(__name__)
_STATUS_SET = frozenset(TASK_STATUSES)
_ID = re.compile(r"-?[0-9]{1,20}")
X = TypeVar("X")

#: Default Redis work per script call. A task costs CHANGE_COST units (about 10 µs of Redis
#: time for a status change or a registration) plus one unit per downstream edge it credits
#: (about 4 µs): 1,000 units keep one call near 5-10 ms. Chunks go one round trip each, so other
#: clients are served between them and never wait much longer than one chunk.
DEFAULT_CHUNK_BUDGET = 1000
CHANGE_COST = 2
LOAD_BATCH = 5000
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
#: ``kids`` slices read per round trip (up to 400 ids each).
SLICE_READ = 50


def int_attr(obj: Any, name: str, default: int, what: str) -> int:
    """An int definition attribute in 0..2^53-1 (absent: ``default``).

    A value that is not even a scalar (a test double such as ``MagicMock``, which invents every
    attribute it is asked for) counts as absent, as in jobmon's own unit tests; every scalar and
    None goes through the range check.
    """
    return check_int(scalar_attr(obj, name, default), what)


def scalar_attr(obj: Any, name: str, default: int) -> Any:
    """``getattr(obj, name, default)``, with a non-scalar value read as absent (see int_attr)."""
    value = getattr(obj, name, default)
    if value is not None and not isinstance(value, (int, float, str, bytes)):
        return default
    return value


def _rechecks(call: ScriptCall) -> bool:
    """A lease extension (heartbeat, leadership renew) is sent again after an in-doubt error
    rather than answered from the reply cache: extending twice is harmless, and the caller
    learns whether it still holds the lease now (LeaseLostError, FencedError), where a replay
    would report a success of seconds ago (renew is the fence before a final status goes to
    the server)."""
    return call.script == "heartbeat" or (call.script == "leadership" and call.args[3] == "renew")


def id_members(members: Iterable[Any]) -> list[int]:
    """The task ids among set or queue members read back; a member that is not a decimal id
    (written by hand) is skipped, as the scripts would refuse it (verify reports it)."""
    out = []
    for m in members:
        s = text(m)
        if _ID.fullmatch(s):
            out.append(int(s))
    return out


def stored_version(raw: Any, run_id: Any) -> int:
    """The run's stored write version (absent: 0); InvalidInputError when it does not parse,
    as the scripts refuse it (comparing versions with a guess would misreport lost writes)."""
    if raw is None:
        return 0
    value = stored_int(raw, -1)
    if not 0 <= value <= MAX_SAFE_INT:
        raise InvalidInputError(
            f"workflow run {run_id}: stored write version {text(raw)[:100]!r} is not an integer"
            " (see swarm-redis verify)"
        )
    return value


class CoreBase:
    """Keys, the local registry, version tracking and the plumbing every operation uses.

    The public methods here (``scripts``, ``read``, ``objects``, ``decode``, ``mirror``,
    ``chunks``) are the API of the operation modules (:mod:`swarm_redis.engine.coordination`).
    """

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
        self.propagate_on_apply = check_flag(propagate_on_apply, "propagate_on_apply")
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
                if isinstance(c, ScriptCall) and not _rechecks(c):
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
        tasks = self.tasks
        for task_id, status, done in found:  # runs once per task of every reply: no call inside
            obj = tasks.get(task_id)
            if obj is not None:
                try:
                    if status is not None:
                        obj.status = status
                    obj.num_upstreams_done = done
                except AttributeError:  # a read-only stand-in: nothing to mirror into
                    pass

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
        self.observe(stored_version(version, self.run_id), cmd.opt_text(token))
        return replies[1:]

    def scan(
        self, command: str, key: str, decode: Callable[[Any], list[X]], count: int = 1000
    ) -> Op[list[X]]:
        """Every element of ``key`` read with SSCAN or HSCAN ``command`` in pages (each call
        bounded), each page's elements decoded by ``decode``."""
        out: list[X] = []
        cursor: Any = 0
        while True:
            (page,) = yield from self.read((command, key, cursor, "COUNT", count))
            cursor, items = page
            out += decode(items)
            if int(cursor) == 0:
                return out

    def scan_ids(self, key: str, count: int = 1000) -> Op[list[int]]:
        """Every member of the id set ``key`` (members that are not ids skipped)."""
        return (yield from self.scan("SSCAN", key, id_members, count))

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

    def fill_slices(self, states: list[cmd.TaskState]) -> Op[list[cmd.TaskState]]:
        """``states`` with the downstream ids of those kept in ``kids`` slices read in: at most
        :data:`SLICE_READ` slices per round trip (each slice is up to 400 ids)."""
        wanted = [(i, s) for i, s in enumerate(states) if s.slices]
        if not wanted:
            return states
        out = list(states)
        names = [(i, n) for i, s in wanted for n in cmd.slice_names(s.task_id, s.slices)]
        got: dict[int, list[Any]] = {i: [] for i, _ in wanted}
        for at in range(0, len(names), SLICE_READ):
            part = names[at : at + SLICE_READ]
            (raws,) = yield from self.read(("HMGET", self.keys.kids, *(n for _, n in part)))
            for (i, _), raw in zip(part, raws):
                got[i].append(raw)
        for i, s in wanted:
            try:
                out[i] = cmd.with_slices(s, got[i])
            except ValueError as exc:
                logger.warning("workflow run %s: %s (see swarm-redis verify)", self.run_id, exc)
        return out

    def load(self, task_ids: Iterable[int]) -> Op[None]:
        """Load tasks missing from the registry, and their descendants (to link them)."""
        pending = [i for i in dict.fromkeys(task_ids) if i not in self.tasks]
        loaded: list[cmd.TaskState] = []
        while pending:
            batch, pending = pending[:LOAD_BATCH], pending[LOAD_BATCH:]
            (raws,) = yield from self.read(("HMGET", self.keys.task, *batch))
            decoded = [self.decode(i, raw) for i, raw in zip(batch, raws) if raw is not None]
            fresh = yield from self.fill_slices([s for s in decoded if s is not None])
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
            (page,) = yield from self.read(("HSCAN", self.keys.task, cursor, "COUNT", LOAD_BATCH))
            cursor, entries = page
            states += [
                s
                for s in (self.decode(text(k), v) for k, v in hash_items(entries))
                if s is not None
            ]
            if int(cursor) == 0:
                break
        states = yield from self.fill_slices(states)
        self._build(states)
        self.mirror((s.task_id, s.status, s.num_upstreams_done) for s in states)
        (raw_arrays,) = yield from self.read(("HGETALL", self.keys.arrays))
        self._absorb_arrays(raw_arrays)

    def ensure_loaded(self, task_ids: Sequence[int]) -> Op[None]:
        """Load the tasks of ``task_ids`` missing from the registry (none: no round trip)."""
        if not all(map(self.tasks.__contains__, task_ids)):
            yield from self.load(task_ids)

    def objects(self, task_ids: Sequence[int]) -> Op[list[Any]]:
        yield from self.ensure_loaded(task_ids)
        tasks = self.tasks
        return [tasks[i] for i in task_ids if i in tasks]

    def _absorb_arrays(self, raw: Any) -> dict[int, int]:
        limits: dict[int, int] = {}
        for k, v in dict(raw).items():
            array_id, limit = stored_int(k, -1), stored_int(v, -1)
            if array_id < 0 or limit < 0:  # never trust what is stored: skipped, as tasks are
                logger.warning(
                    "workflow run %s: array %r has an unparseable limit %r, skipped"
                    " (see swarm-redis verify)",
                    self.run_id,
                    text(k)[:100],
                    text(v)[:100],
                )
                continue
            limits[array_id] = limit
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

    def resource_key(self, task: Any) -> str:
        """The key claim_batch groups by: a stable digest of the task's current resources."""
        resources = getattr(task, "current_task_resources", None)
        if resources is None:
            return ""
        try:
            return format(resource_digest(resources, self.codec), "x")
        except TypeError:
            return ""
