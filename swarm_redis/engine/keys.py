"""Key names of a workflow run: the ONLY module that builds them.

Every key of a run is ``<prefix>:{<run_id>}:<name>``. The hash tag ``{<run_id>}`` puts the whole
run in one Redis Cluster slot, so every script can touch every key of the run. Scripts receive
the run's keys in KEYS in the order of :data:`RUN_KEY_NAMES`; ``scripts.py`` turns that order into
the Lua table ``K`` (``K.meta``, ``K.task`` ...) so the order is written down once, here.

=============  ======  =============================================================================
name           type    content
=============  ======  =============================================================================
meta           hash    workflow_id, workflow_run_id, dag_id, status (run status letter), limit
                       (max_concurrently_running), last_sync (encoded), last_sync_us, npc
                       (num_previously_complete), version (write version), token (creation
                       token: a run deleted and created again is told apart), events_maxlen,
                       detail_max (calls changing more tasks write one compact event),
                       created_ms, finalized, fringe_done
task           hash    task id -> record ``S|done|stamp|flags|array|nup|start|children``: status
                       letter, upstreams done, last applied sync stamp (µs, may be empty), flags
                       ("p" once its completion was propagated), array id, number of upstreams,
                       starting done count at registration, comma-separated downstream ids
                       (more than 400: the marker ``*<m>``, the ids are in ``kids``)
s:G .. s:F     set     task ids per status, one set for each of the nine task statuses
ready          zset    the ready-to-run queue: task id -> position (integer score); ZRANGE 0 -1
                       is the queue order, head first (front pushes score below the lowest)
queued         set     ids currently in ``ready`` (the at-most-once gate of the queue)
qres           hash    task id -> resource key, for queued and claimed tasks
arrays         hash    array id -> max_concurrently_running of the array
active         hash    array id -> tasks of the array in Q/I/O/R (kept by the scripts, O(1))
claims         hash    task id -> batch id, for tasks claimed and not yet acknowledged (written as
                       a hash table, never a listpack: see claim_batch.lua)
batches        hash    batch id -> ``holder|incarnation|array|resource key|id,id,...`` of claimed
                       batches (holder and incarnation empty: orphaned, waiting in ``orphans``)
reserved       hash    "run" and array id -> capacity reserved by claimed batches
orphans        list    batch ids taken over from dead replicas, re-driven first by claim_batch
replicas       hash    replica id -> ``incarnation|lease deadline ms|joined ms``
leader         hash    id, incarnation, epoch, deadline_ms: the leadership lease
events         stream  what every state change did (capped by meta.events_maxlen)
counters       hash    monotonic counters: to:<S> transitions into each status, claims, acks,
                       releases, reaps, propagations, leader_changes, joins, redrives, orphaned,
                       reconciled, batches (also the sequence of batch ids)
resources      hash    resource key -> codec-encoded TaskResources (first writer wins)
reap_lock      string  short mutex so concurrent reaps are harmless
taskres        hash    task id -> resource key it was registered or last queued with (only for
                       tasks that have resources); propagation copies it into ``qres``
replies        hash    request id -> encoded reply of a mutating script call, answered again when
                       the same call arrives twice (retries); fields ``#bytes``, ``#count``: total
                       size and number of replies, ``#ttl``: last TTL renewal (ms); see
                       lua/includes/idem.lua, bounded by scripts.REPLY_MAX and REPLY_MAX_BYTES
reply_at       zset    request id -> Redis time (ms) its reply was stored; replies older than
                       scripts.REPLY_RETENTION_MS (10 min) are dropped, a few per call. Both
                       ``replies`` and ``reply_at`` have a TTL: they expire 1-1.1 times that
                       long after the last store
qidx           zset    the ready queue per array: one member ``array|position|id`` per entry of
                       ``ready`` (all scored 0, lexical order; position = score + 2^52, 16
                       digits), so claim_batch finds each array's next task in O(log n)
pcredit        hash    task id -> ``<n>`` or ``<n>q``: completions propagated to a task that had
                       no record yet (n credits; "q": one came from a propagation that queues).
                       Registration adds n to the new record's done count and deletes the field
fanout         hash    a fan-out too big for one call, credited one slice per call: task id ->
                       ``<n>:<k>:<m>`` (its first n children credited, slice k of m next) and
                       ``<id>#<k>`` -> the ids of slice k (at most 1,000); the task is flagged
                       "p" when it is cut, each slice field is deleted with its credits, the
                       progress field with the last one
build_lock     string  jobmon extra: ``building|<token>`` (with a TTL) while one replica registers
                       a jobmon run's definitions, ``built`` once they are all registered
distributor    string  jobmon extra: the lease of the run's one distributor,
                       ``<token>|<host>|<pid>|<state>`` with a TTL (see swarm_redis.jobmon.distributor)
kids           hash    ``<id>#<k>`` -> slice k (of m, at most 400 ids) of the downstream ids of a
                       task whose record holds the marker ``*<m>``: written before the record
                       (register_kids), read by fan-outs one slice per call, kept with the record
=============  ======  =============================================================================

One redis-cli command reads a task's status and done count (the first two fields of its record),
and one the number of tasks in a status (every status set is kept exact by the scripts)::

    redis-cli HGET '<prefix>:{<run>}:task' <task id> | cut -d'|' -f1,2     # e.g. R|3
    redis-cli SCARD '<prefix>:{<run>}:s:R'                                 # tasks RUNNING

The record keeps the mutable fields first and the definition (array, nup, start, children) last:
the scripts parse the head of a record with one pattern match and write the definition back as
the same bytes without splitting it (docs/layouts-measured.md: the layouts measured).
"""

from __future__ import annotations

from swarm_redis.constants import TASK_STATUSES

#: KEYS order of every script. Append new names at the end only.
RUN_KEY_NAMES: tuple[str, ...] = (
    "meta",
    "task",
    *(f"s:{status}" for status in TASK_STATUSES),
    "ready",
    "queued",
    "qres",
    "arrays",
    "active",
    "claims",
    "batches",
    "reserved",
    "orphans",
    "replicas",
    "leader",
    "events",
    "counters",
    "resources",
    "reap_lock",
    "taskres",
    "replies",
    "reply_at",
    "qidx",
    "pcredit",
    "fanout",
    "build_lock",
    "distributor",
    "kids",
)


#: Redis type of each key of :data:`RUN_KEY_NAMES` (the table above). Every script refuses to
#: run when a key of its run holds another type (lua/includes/prelude.lua), so that no script
#: fails with WRONGTYPE after its first write; snapshots check the same types.
RUN_KEY_TYPES: dict[str, str] = {
    "meta": "hash",
    "task": "hash",
    **{f"s:{status}": "set" for status in TASK_STATUSES},
    "ready": "zset",
    "queued": "set",
    "qres": "hash",
    "arrays": "hash",
    "active": "hash",
    "claims": "hash",
    "batches": "hash",
    "reserved": "hash",
    "orphans": "list",
    "replicas": "hash",
    "leader": "hash",
    "events": "stream",
    "counters": "hash",
    "resources": "hash",
    "reap_lock": "string",
    "taskres": "hash",
    "replies": "hash",
    "reply_at": "zset",
    "qidx": "zset",
    "pcredit": "hash",
    "fanout": "hash",
    "build_lock": "string",
    "distributor": "string",
    "kids": "hash",
}


def run_base(prefix: str, run_id: int | str) -> str:
    """The common start of every key of a run, hash tag included."""
    return f"{prefix}:{{{run_id}}}:"


#: Appended to a run's meta key: the hash the phase-profiled variants of the scripts add their
#: phase times to (field ``<script>|<phase>``, see :mod:`swarm_redis.engine.scripts`). Not in
#: the key table: no script declares it, and only a profiled run (a benchmark) has it.
PHASES_SUFFIX = "|phases"


class RunKeys:
    """The key names of one workflow run."""

    __slots__ = ("all", "base", "prefix", "run_id")

    def __init__(self, prefix: str, run_id: int | str) -> None:
        self.prefix = check_prefix(prefix)
        self.run_id = run_id
        self.base = run_base(prefix, run_id)
        #: Every key of the run in KEYS order.
        self.all: list[str] = [self.base + name for name in RUN_KEY_NAMES]

    def __getattr__(self, name: str) -> str:  # only called for names not in __slots__
        try:
            return self.all[RUN_KEY_NAMES.index(name)]
        except ValueError:
            raise AttributeError(name) from None

    def key(self, name: str) -> str:
        """The full key for ``name`` (one of :data:`RUN_KEY_NAMES`)."""
        if name not in RUN_KEY_NAMES:
            raise KeyError(name)
        return self.base + name

    @property
    def phases(self) -> str:
        """The phase times of a phase-profiled run (see :data:`PHASES_SUFFIX`)."""
        return self.key("meta") + PHASES_SUFFIX

    def status_set(self, status: str) -> str:
        """The set of task ids in ``status``."""
        return self.base + "s:" + status

    @property
    def match_all(self) -> str:
        """A SCAN pattern matching every key of this run (and nothing else)."""
        return glob_escape(self.base) + "*"


def check_prefix(prefix: object) -> str:
    """``prefix`` if it can prefix run keys: a non-empty str without ``{``/``}``.

    A brace would move the Cluster hash tag out of ``{<run_id>}`` (and make the run id
    ambiguous when keys are listed), so it is refused rather than escaped.

    Raises:
        InvalidInputError: Empty, not a str, or holding a brace.
    """
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        from swarm_redis.errors import InvalidInputError

        raise InvalidInputError(
            f"key prefix {prefix!r} must be a non-empty string without '{{' or '}}'"
        )
    return prefix


#: Characters special in Redis glob patterns (SCAN MATCH, KEYS): ``*``, ``?``, ``[``/``]`` and
#: the escape ``\\`` itself. ``^`` and ``-`` are special only inside ``[...]``, which an escaped
#: ``[`` never opens.
GLOB_SPECIAL = frozenset("\\*?[]")


def glob_escape(text: str) -> str:
    """``text`` as a Redis glob pattern that matches exactly ``text`` (the one escaper).

    Every key part that goes into a MATCH pattern (prefixes, run ids) passes through here, so a
    prefix such as ``othe?`` or ``a*`` matches only itself and never another run's keys.
    """
    return "".join("\\" + c if c in GLOB_SPECIAL else c for c in text)


def meta_pattern(prefix: str) -> str:
    """SCAN pattern that finds the meta key of every run under ``prefix`` (prefix escaped)."""
    return glob_escape(check_prefix(prefix)) + ":{*}:meta"


def run_id_from_meta_key(prefix: str, key: str) -> str | None:
    """The run id inside a meta key found by :func:`meta_pattern`.

    None unless the key is exactly ``<prefix>:{<integer>}:meta`` with an int64 run id, as the
    CLI takes it: a key that only looks like one (``p:{1}:x:{2}:meta``, a run id that is not an
    integer, or one of thousands of digits, which ``int()`` refuses) names no run.
    """
    start = len(prefix) + 2
    if not key.startswith(prefix + ":{") or not key.endswith("}:meta"):
        return None
    run_id = key[start : -len("}:meta")]
    digits = run_id[1:] if run_id.startswith("-") else run_id
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        return None
    if str(int(run_id)) != run_id or abs(int(run_id)) > (1 << 63) - 1:
        return None
    return run_id
