"""Export a run to a JSON snapshot and import it back, key by key.

Modules: ``format`` (key types, bounds, errors, the checked plan), ``export``, ``check`` (load
and validate a file in full), ``restore`` (write a checked plan atomically). The names below are
the package's API.

The snapshot holds the run's keys of the key table (:data:`swarm_redis.engine.keys.RUN_KEY_NAMES`,
read by name: no SCAN), each with its Redis type, its remaining TTL in milliseconds (-1: none)
and its full content:

* hash: ``[[field, value], ...]`` sorted by field; set: sorted members; list: the elements in
  order; zset: ``[[member, score], ...]`` by score then member, scores as decimal strings;
  string: the value;
* stream: ``{"entries": [[id, [[field, value], ...]], ...], "last_id", "entries_added",
  "max_deleted_id"}``; import re-adds the entries with their ids and restores the stream's
  last id and counters with XSETID, so new events keep ascending ids. Consumer groups are not
  kept (swarm_redis creates none).

Byte strings that are valid UTF-8 are stored as JSON strings, others as ``{"b64": "..."}``.
Keys are stored by their name after the run's base (``meta``, ``s:G`` ...). Keys of
:data:`TRANSIENT_KEYS` (keys with a TTL that matter only to live processes: the reap mutex, the
reply cache of retried calls) are neither exported nor imported. An export of
a live run reads each key as it is at that moment, not the whole run at one instant: export a run
that is quiet (or stopped).

Import never trusts the file (check everything, then write):
:func:`load_snapshot` + :func:`validate_snapshot` check the WHOLE file before anything is
written:

* the key prefix comes from the caller (the command line), never from the file; the run id comes
  from the caller or the file, and must be an integer;
* key names only from :data:`KEY_TYPES`, each with the Redis type the key table gives it, and no
  TTL (run keys never expire);
* ``meta.workflow_run_id`` is set to the run id imported as;
* sizes bounded: the file at most ``max_bytes`` (:data:`MAX_FILE_BYTES` by default), each
  string (field, value, member, entry field) at most :data:`MAX_VALUE_BYTES`, at most
  :data:`MAX_ELEMENTS` elements in all (hash pairs, members, list items, stream entries);
* record formats parseable: task records ``S|done|stamp|flags|array|nup|start|children`` with
  a known status and integers, task ids as integers wherever a key holds them (status sets,
  ``queued``, ``ready``, ``claims``, ``qres``, ``taskres``), integer counters and limits,
  ``replicas`` leases ``incarnation|deadline ms|joined ms``, ``batches`` records, stream ids
  ascending and below the stream's last id.

:func:`import_run` then writes into temporary keys in the run's hash slot (they carry a TTL, so
an import killed half way leaves nothing that lasts) and moves them into place with RENAMEs in one
MULTI/EXEC, WATCHing the run's keys: the run appears whole or not at all. With ``force`` the old
run's keys are renamed away in the same transaction (then UNLINKed), so the old run is replaced
atomically and stays untouched when anything fails before. (``force`` does not check whether
the old run is live: stop it first, as for ``purge``.)
"""

from swarm_redis.ops.snapshot.check import load_snapshot, validate_snapshot
from swarm_redis.ops.snapshot.export import export_run, save_snapshot
from swarm_redis.ops.snapshot.format import (
    FORMAT,
    KEY_TYPES,
    MAX_ELEMENTS,
    MAX_FILE_BYTES,
    MAX_VALUE_BYTES,
    TRANSIENT_KEYS,
    ImportPlan,
    RunExistsError,
    SnapshotError,
    parse_run_id,
    run_keys_present,
)
from swarm_redis.ops.snapshot.restore import import_run

__all__ = [
    "FORMAT",
    "KEY_TYPES",
    "MAX_ELEMENTS",
    "MAX_FILE_BYTES",
    "MAX_VALUE_BYTES",
    "TRANSIENT_KEYS",
    "ImportPlan",
    "RunExistsError",
    "SnapshotError",
    "export_run",
    "import_run",
    "load_snapshot",
    "parse_run_id",
    "run_keys_present",
    "save_snapshot",
    "validate_snapshot",
]
