"""Two Redis implementations without Lua, to measure what the scripts buy.

Both use the same key layout and task record format as the Lua scripts (see
:mod:`swarm_redis.engine.keys`): the ``task`` hash of ``S|done|stamp|flags|array|nup|start|children``
records, one set per status, the ``ready`` list with its ``queued`` gate, ``claims``,
``batches``, ``reserved``, the per-array ``active`` counters, ``counters``, the event stream and
the run's write version. They implement what the lifecycle benchmark needs: registration,
enqueue, claim, ack and apply with completion propagation.

* :class:`PipelinedState` is what a competent engineer writes for several replicas without Lua:
  optimistic transactions. Each operation WATCHes the keys it decides on, reads what it needs
  in one pipelined round trip per dependent step (on a second connection: the WATCH on the
  transaction's connection still guards them), computes in Python, and writes everything in one
  MULTI/EXEC with bulk commands (multi-field HSET, multi-member SADD/SREM). A WatchError means
  another client wrote a watched key meanwhile: the operation is recomputed from fresh reads.
* :class:`NaiveState` sends one plain command per Redis call and no transaction: the obvious
  first version. It is not safe with several replicas; it shows what round trips cost.

Both need a client created with ``decode_responses=True``.
"""

from swarm_redis.bench.alternatives.common import AltBatch, AltReplica
from swarm_redis.bench.alternatives.naive import NaiveState
from swarm_redis.bench.alternatives.pipelined import PipelinedState

__all__ = ["AltBatch", "AltReplica", "NaiveState", "PipelinedState"]
