"""Export a run to a JSON snapshot and import it back, key by key.

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

Import never trusts the file (DESIGN section 9, rules 1 and 4: "check everything, then write"):
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

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from swarm_redis.constants import TASK_STATUSES, WORKFLOW_RUN_STATUSES
from swarm_redis.engine.commands import KIDS_SLICE, text
from swarm_redis.engine.keys import RUN_KEY_NAMES, RunKeys, check_prefix
from swarm_redis.engine.replies import hash_items
from swarm_redis.errors import SwarmRedisError, UnknownRunError

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

FORMAT = "swarm-redis-snapshot"
FORMAT_VERSION = 1
_CHUNK = 500

#: Redis type of each key of the key table that a snapshot carries (see keys.py). Only names that
#: are in RUN_KEY_NAMES count; a name appended there needs its type here (or a place in
#: TRANSIENT_KEYS): tests/test_cli_safety.py checks it.
KEY_TYPES: dict[str, str] = {
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
    "taskres": "hash",
    "pcredit": "hash",
    "fanout": "hash",
    "qidx": "zset",
    "build_lock": "string",
    "kids": "hash",
}
#: Keys of the key table that snapshots leave out: keys with a TTL whose meaning ends with the
#: processes that wrote them (the reap mutex; the reply cache of retried calls; the lease of a
#: jobmon run's distributor). Import skips them with a note.
TRANSIENT_KEYS: frozenset[str] = frozenset({"reap_lock", "replies", "reply_at", "distributor"})


def _table_types() -> dict[str, str]:
    """Name -> Redis type for the names of the key table as it is now."""
    return {name: KEY_TYPES[name] for name in RUN_KEY_NAMES if name in KEY_TYPES}


#: Largest snapshot file import reads (bytes); the CLI's ``import --max-bytes`` changes it.
MAX_FILE_BYTES = 1 << 30
#: Largest single string (hash field or value, member, list item, stream field or value).
MAX_VALUE_BYTES = 1 << 20
#: Most elements (hash pairs, members, list items, stream entries) in one snapshot.
MAX_ELEMENTS = 20_000_000
#: TTL of the temporary keys an import writes before it moves them into place.
TEMP_TTL_MS = 3_600_000

_INT64_MAX = (1 << 63) - 1
_INT_RE = re.compile(rb"-?[0-9]{1,19}")
_RUN_ID_RE = re.compile(r"-?[0-9]{1,19}")
_STREAM_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_SCORE_RE = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?")


class SnapshotError(SwarmRedisError, ValueError):
    """The file is not a snapshot this version can import (nothing was written)."""


class _Bad(Exception):
    """A value check failed; the caller adds where (kept off the hot path)."""


class RunExistsError(SwarmRedisError, FileExistsError):
    """Import refused: the run already has keys (pass ``force=True`` to replace them)."""


def _enc(value: Any) -> Any:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}


def _sort_key(item: Any) -> Any:
    first = item[0] if isinstance(item, list) else item
    return (1, first["b64"]) if isinstance(first, dict) else (0, first)


def parse_run_id(value: Any, *, what: str = "run id") -> int:
    """A workflow run id given as an int or a decimal string (int64), else SnapshotError."""
    if isinstance(value, bool):
        raise SnapshotError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int) and -_INT64_MAX <= value <= _INT64_MAX:
        return value
    if isinstance(value, str) and _RUN_ID_RE.fullmatch(value):
        number = int(value)
        if -_INT64_MAX <= number <= _INT64_MAX:
            return number
    raise SnapshotError(f"{what} must be an integer, got {value!r}")


def run_keys_present(client: Any, keys: RunKeys) -> list[str]:
    """The keys of the key table that exist for this run (by name, no SCAN)."""
    pipe = client.pipeline(transaction=False)
    for key in keys.all:
        pipe.exists(key)
    return [key for key, n in zip(keys.all, pipe.execute()) if int(n)]


# --- export ----------------------------------------------------------------------------------


def _read_list(client: Any, key: str) -> list[Any]:
    out: list[Any] = []
    while True:
        page = client.lrange(key, len(out), len(out) + _CHUNK * 4 - 1)
        out += page
        if len(page) < _CHUNK * 4:
            return out


def _read_stream(client: Any, key: str) -> dict[str, Any]:
    info = client.xinfo_stream(key)
    entries: list[Any] = []
    start = "-"
    while True:
        page = client.xrange(key, min=start, max="+", count=_CHUNK * 4)
        for entry_id, fields in page:
            entries.append([text(entry_id), [[_enc(f), _enc(v)] for f, v in hash_items(fields)]])
        if len(page) < _CHUNK * 4:
            break
        start = f"({text(page[-1][0])}"
    return {
        "entries": entries,
        "last_id": text(info["last-generated-id"]),
        "entries_added": int(info.get("entries-added", len(entries))),
        "max_deleted_id": text(info.get("max-deleted-entry-id", "0-0")),
    }


def _score(value: Any) -> str:
    """A zset score as a decimal string: integral scores without a fraction (exact to 2^53)."""
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) < 2**63 else repr(number)


def _dump(client: Any, key: str) -> dict[str, Any] | None:
    kind, pttl = client.pipeline(transaction=False).type(key).pttl(key).execute()
    kind = text(kind)
    value: Any
    if kind == "none":
        return None
    if kind == "string":
        value = _enc(client.get(key))
    elif kind == "hash":
        value = sorted(
            ([_enc(f), _enc(v)] for f, v in client.hscan_iter(key, count=_CHUNK * 4)), key=_sort_key
        )
    elif kind == "set":
        value = sorted((_enc(m) for m in client.sscan_iter(key, count=_CHUNK * 4)), key=_sort_key)
    elif kind == "list":
        value = [_enc(v) for v in _read_list(client, key)]
    elif kind == "zset":
        value = sorted(
            ([_enc(m), _score(s)] for m, s in client.zscan_iter(key, count=_CHUNK * 4)),
            key=lambda pair: (float(pair[1]), _sort_key([pair[0]])),
        )
    elif kind == "stream":
        value = _read_stream(client, key)
    else:
        raise SnapshotError(f"key {key} has type {kind}, which snapshots do not support")
    return {"type": kind, "pttl": int(pttl), "value": value}


def export_run(client: Any, keys: RunKeys) -> dict[str, Any]:
    """The run as a JSON-ready snapshot dict: the keys of the key table, read by name.

    Raises:
        UnknownRunError: The run has no keys at all.
    """
    dumped = {}
    for name, key in zip(RUN_KEY_NAMES, keys.all):
        if name in TRANSIENT_KEYS:
            continue
        entry = _dump(client, key)
        if entry is not None:
            dumped[name] = entry
    if not dumped:
        raise UnknownRunError(f"workflow run {keys.run_id} not found under prefix {keys.prefix!r}")
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "prefix": keys.prefix,
        "run_id": str(keys.run_id),
        "exported_ms": int(time.time() * 1000),
        "keys": dumped,
    }


def save_snapshot(snapshot: Mapping[str, Any], path: str | Path) -> None:
    """Write a snapshot as JSON (``-`` is not special: pass a real path)."""
    Path(path).write_bytes(orjson.dumps(snapshot, option=orjson.OPT_APPEND_NEWLINE))


# --- load and validate -----------------------------------------------------------------------


def load_snapshot(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES) -> dict[str, Any]:
    """Read a snapshot file and check its envelope (format, version, ``keys`` object).

    The content is checked by :func:`validate_snapshot`.

    Raises:
        SnapshotError: Unreadable, larger than ``max_bytes``, not JSON, not a swarm-redis
            snapshot, or of a newer format version.
    """
    try:
        size = Path(path).stat().st_size
        if size > max_bytes:
            raise SnapshotError(
                f"{path}: {size} bytes, more than the {max_bytes} bytes import reads "
                "(import --max-bytes raises the bound)"
            )
        raw = Path(path).read_bytes()
    except OSError as e:
        raise SnapshotError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise SnapshotError(f"{path}: not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapshotError(f"{path}: not a {FORMAT} file")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SnapshotError(f"{path}: bad snapshot format version {version!r}")
    if version > FORMAT_VERSION:
        raise SnapshotError(f"{path}: snapshot format {version} is newer than this tool")
    if not isinstance(data.get("keys"), dict):
        raise SnapshotError(f"{path}: 'keys' must be an object of key name -> entry")
    return data


@dataclass
class _Entry:
    """One key to write: its name in the key table, Redis type and decoded content."""

    name: str
    kind: str
    items: list[Any]  # hash: (field, value) pairs; set/list: members; string: [value]
    stream: dict[str, Any] | None = None


@dataclass
class ImportPlan:
    """A snapshot checked in full: where it goes and what to write (see :func:`import_run`)."""

    keys: RunKeys
    entries: list[_Entry]
    notes: list[str] = field(default_factory=list)

    @property
    def key_count(self) -> int:
        return len(self.entries)


class _Checker:
    """Decodes and checks a snapshot's values, counting elements against the bounds."""

    def __init__(self, max_elements: int, max_value_bytes: int) -> None:
        self.max_elements = max_elements
        self.max_value_bytes = max_value_bytes
        self.elements = 0

    def count(self, n: int, where: str) -> None:
        self.elements += n
        if self.elements > self.max_elements:
            raise SnapshotError(
                f"{where}: the snapshot holds more than {self.max_elements} elements"
            )

    def bytes_of(self, value: Any, where: str) -> bytes:
        """A JSON string (UTF-8) or ``{"b64": ...}`` as bytes."""
        try:
            return self._bytes(value)
        except _Bad as e:
            raise SnapshotError(f"{where}: {e}") from None

    def _bytes(self, value: Any) -> bytes:
        """:meth:`bytes_of` without the location (hot path: the caller adds it on error)."""
        if type(value) is str:
            try:
                out = value.encode("utf-8")
            except UnicodeEncodeError:
                raise _Bad("not valid Unicode text") from None
        elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                out = base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise _Bad(f"bad base64 {value['b64'][:40]!r}") from None
        else:
            raise _Bad(f'expected a string or {{"b64": ...}}, got {_shown(value)}')
        if len(out) > self.max_value_bytes:
            raise _Bad(f"{len(out)} bytes, more than {self.max_value_bytes}")
        return out

    def pairs(self, value: Any, where: str) -> list[tuple[bytes, bytes]]:
        """A hash's ``[[field, value], ...]`` (fields unique)."""
        rows = _list(value, where)
        self.count(len(rows), where)
        out = []
        seen: set[bytes] = set()
        conv = self._bytes
        for i, row in enumerate(rows):
            try:
                if type(row) is not list or len(row) != 2:
                    raise _Bad(f"expected [field, value], got {_shown(row)}")
                f = conv(row[0])
                v = conv(row[1])
            except _Bad as e:
                raise SnapshotError(f"{where}[{i}]: {e}") from None
            if f in seen:
                raise SnapshotError(f"{where}[{i}]: field {f!r} appears twice")
            seen.add(f)
            out.append((f, v))
        return out

    def scored(self, value: Any, where: str) -> list[tuple[bytes, bytes]]:
        """A zset's ``[[member, score], ...]`` (members unique, scores finite numbers)."""
        rows = _list(value, where)
        self.count(len(rows), where)
        out = []
        seen: set[bytes] = set()
        for i, row in enumerate(rows):
            try:
                if type(row) is not list or len(row) != 2:
                    raise _Bad(f"expected [member, score], got {_shown(row)}")
                member = self._bytes(row[0])
                score = row[1]
                if type(score) is not str or _SCORE_RE.fullmatch(score) is None:
                    raise _Bad(f"bad score {score!r}")
            except _Bad as e:
                raise SnapshotError(f"{where}[{i}]: {e}") from None
            if member in seen:
                raise SnapshotError(f"{where}[{i}]: member {member[:60]!r} appears twice")
            seen.add(member)
            out.append((member, score.encode()))
        return out

    def members(self, value: Any, where: str, *, unique: bool) -> list[bytes]:
        rows = _list(value, where)
        self.count(len(rows), where)
        conv = self._bytes
        try:
            out = [conv(m) for m in rows]
        except _Bad:
            for i, m in enumerate(rows):  # again, slowly, to say which one
                self.bytes_of(m, f"{where}[{i}]")
            raise
        if unique and len(set(out)) != len(out):
            raise SnapshotError(f"{where}: a set member appears twice")
        return out

    def stream(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise SnapshotError(f"{where}: a stream must be an object, got {_shown(value)}")
        extra = set(value) - {"entries", "last_id", "entries_added", "max_deleted_id"}
        if extra:
            raise SnapshotError(f"{where}: unknown stream fields {sorted(extra)}")
        rows = _list(value.get("entries"), f"{where}.entries")
        self.count(len(rows), where)
        entries: list[tuple[str, list[bytes]]] = []
        prev = (0, 0)
        for i, row in enumerate(rows):
            at = f"{where}.entries[{i}]"
            if not isinstance(row, list) or len(row) != 2:
                raise SnapshotError(f"{at}: expected [id, [[field, value], ...]]")
            entry_id = _stream_id(row[0], f"{at} id")
            if entry_id <= prev:
                raise SnapshotError(f"{at}: id {row[0]!r} is not above the previous one")
            prev = entry_id
            fields = self.pairs(row[1], f"{at} fields")
            if not fields:
                raise SnapshotError(f"{at}: a stream entry needs at least one field")
            entries.append((row[0], [x for pair in fields for x in pair]))
        last = _stream_id(value.get("last_id"), f"{where}.last_id")
        if last < prev or last == (0, 0):
            raise SnapshotError(f"{where}.last_id {value.get('last_id')!r} is below its entries")
        added = value.get("entries_added", len(rows))
        if isinstance(added, bool) or not isinstance(added, int) or not len(rows) <= added:
            raise SnapshotError(f"{where}.entries_added must be an integer >= the entry count")
        max_deleted = _stream_id(value.get("max_deleted_id", "0-0"), f"{where}.max_deleted_id")
        if max_deleted > last:
            raise SnapshotError(f"{where}.max_deleted_id is above last_id")
        return {
            "entries": entries,
            "last_id": value["last_id"],
            "entries_added": added,
            "max_deleted_id": value.get("max_deleted_id", "0-0"),
        }


def _shown(value: Any) -> str:
    shown = repr(value)
    return f"{type(value).__name__} {shown[:60]}{'...' if len(shown) > 60 else ''}"


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SnapshotError(f"{where}: expected a JSON array, got {_shown(value)}")
    return value


def _stream_id(value: Any, where: str) -> tuple[int, int]:
    match = _STREAM_ID_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise SnapshotError(f"{where}: bad stream id {value!r}")
    ms, seq = int(match[1]), int(match[2])
    if ms >= 1 << 64 or seq >= 1 << 64:
        raise SnapshotError(f"{where}: bad stream id {value!r}")
    return ms, seq


# Record checks: each returns None when the value is well formed, else what is wrong.


def _is_int(raw: bytes) -> bool:
    if raw.isdigit() and len(raw) < 19:  # fast path: below 10**18 < 2**63
        return True
    return _INT_RE.fullmatch(raw) is not None and abs(int(raw)) <= _INT64_MAX


def _is_opt_int(raw: bytes) -> bool:
    return raw == b"" or _is_int(raw)


_TASK_RECORD_RE = re.compile(
    rb"["
    + "".join(TASK_STATUSES).encode()
    + rb"]\|(-?[0-9]{1,19})\|(-?[0-9]{1,19})?\|[a-z]*\|(-?[0-9]{1,19})\|"
    rb"(-?[0-9]{1,19})\|(-?[0-9]{1,19})\|(?:(?:-?[0-9]{1,19}(?:,-?[0-9]{1,19})*)?|\*[1-9][0-9]{0,4})"
)


def _task_record_problem(raw: bytes) -> str | None:
    if _TASK_RECORD_RE.fullmatch(raw) is not None:  # the fast path of every good record
        return None
    parts = raw.split(b"|")
    if len(parts) != 8:
        return f"{len(parts)} '|'-separated parts instead of 8"
    status, done, stamp, flags, array, nup, start, children = parts
    if status.decode("latin-1") not in TASK_STATUSES:
        return f"unknown status {status!r}"
    if not all(_is_int(x) for x in (done, array, nup, start)):
        return "done, array, upstreams and start must be integers"
    if not _is_opt_int(stamp):
        return "the stamp must be empty or an integer"
    if not all(97 <= c <= 122 for c in flags):  # lower-case letters ("p": propagated)
        return f"unknown flags {flags!r}"
    if children and not all(_is_int(c) for c in children.split(b",")):
        return "the downstream ids must be integers or the marker *<slices>"
    return "malformed"


def _lease_problem(raw: bytes) -> str | None:
    parts = raw.split(b"|")
    if len(parts) != 3 or not _is_int(parts[1]) or not _is_opt_int(parts[2]):
        return "expected incarnation|deadline ms|joined ms"
    return None


def _batch_problem(raw: bytes) -> str | None:
    parts = raw.split(b"|", 4)
    if len(parts) != 5:
        return "expected holder|incarnation|array|resource key|ids"
    ids = parts[4]
    if ids and not all(_is_int(i) for i in ids.split(b",")):
        return "the task ids must be integers"
    return None


_Check = Callable[[bytes], "str | None"]


def _slice_name_problem(raw: bytes) -> str | None:
    tid, sep, k = raw.partition(b"#")
    return None if sep and _is_int(tid) and k.isdigit() else "expected <task id>#<slice>"


def _slice_problem(raw: bytes) -> str | None:
    ids = raw.split(b",")
    if len(ids) > KIDS_SLICE or not all(_is_int(i) for i in ids):
        return f"expected 1..{KIDS_SLICE} task ids joined by ','"
    return None


def _int_problem(raw: bytes) -> str | None:
    return None if _is_int(raw) else "not an integer"


def _run_status_problem(raw: bytes) -> str | None:
    return None if raw.decode("latin-1") in WORKFLOW_RUN_STATUSES else "unknown run status"


#: name -> (check of each hash field / member / item, check of each hash value)
_RECORD_CHECKS: dict[str, tuple[_Check | None, _Check | None]] = {
    "task": (_int_problem, _task_record_problem),
    **{f"s:{status}": (_int_problem, None) for status in TASK_STATUSES},
    "ready": (_int_problem, None),
    "queued": (_int_problem, None),
    "qres": (_int_problem, None),
    "taskres": (_int_problem, None),
    "claims": (_int_problem, _int_problem),
    "batches": (_int_problem, _batch_problem),
    "orphans": (_int_problem, None),
    "replicas": (None, _lease_problem),
    "arrays": (None, _int_problem),
    "active": (None, _int_problem),
    "reserved": (None, _int_problem),
    "counters": (None, _int_problem),
    "kids": (_slice_name_problem, _slice_problem),
}
#: meta/leader fields that must hold integers (or be empty) when present.
_INT_FIELDS: dict[str, frozenset[bytes]] = {
    "meta": frozenset(
        {b"workflow_id", b"workflow_run_id", b"dag_id", b"limit", b"version", b"npc"}
        | {b"events_maxlen", b"created_ms", b"last_sync_us"}
    ),
    "leader": frozenset({b"epoch", b"deadline_ms"}),
}


def _check_records(name: str, entry: _Entry) -> None:
    where = f"keys.{name}"
    if name in _INT_FIELDS:
        for f, v in entry.items:
            if f in _INT_FIELDS[name] and not _is_opt_int(v):
                raise SnapshotError(
                    f"{where}: field {f.decode(errors='replace')!r} is not an integer"
                )
        if name == "meta":
            status = dict(entry.items).get(b"status")
            if status is not None and _run_status_problem(status):
                raise SnapshotError(f"{where}: unknown run status {status!r}")
        return
    first, second = _RECORD_CHECKS.get(name, (None, None))
    is_hash = entry.kind in ("hash", "zset")  # (field, value) / (member, score) pairs
    columns = (
        (first, [f for f, _ in entry.items] if is_hash else entry.items),
        (second, [v for _, v in entry.items] if is_hash else []),
    )
    for check, values in columns:
        if check is None or (check is _int_problem and _all_small_ints(values)):
            continue  # nothing to check, or every value passes the fast test
        for i, value in enumerate(values):
            if (problem := check(value)) is not None:
                raise SnapshotError(f"{where}[{i}]: {value[:60]!r}: {problem}")


def _all_small_ints(values: Sequence[bytes]) -> bool:
    """True when every value is a non-negative decimal below 10**18 (checked in C loops)."""
    return all(map(bytes.isdigit, values)) and max(map(len, values), default=0) < 19


def validate_snapshot(
    data: Mapping[str, Any],
    *,
    prefix: str,
    run_id: int | None = None,
    max_elements: int = MAX_ELEMENTS,
    max_value_bytes: int = MAX_VALUE_BYTES,
) -> ImportPlan:
    """Check a loaded snapshot in full and decode what to write; nothing touches Redis.

    Args:
        data: What :func:`load_snapshot` returned.
        prefix: The key prefix to import under (the file's own prefix is only noted).
        run_id: The run id to import as; None: the file's ``run_id`` (which must be an integer).

    Raises:
        SnapshotError: Anything in the file is not what an export writes (the message names it).
    """
    try:
        prefix = check_prefix(prefix)
    except SwarmRedisError as e:
        raise SnapshotError(str(e)) from None
    if not isinstance(data, Mapping):
        raise SnapshotError(f"a snapshot is a JSON object, got {_shown(data)}")
    notes: list[str] = []
    file_run = data.get("run_id")
    if run_id is None:
        run_id = parse_run_id(file_run, what="the snapshot's run_id")
    else:
        run_id = parse_run_id(run_id)
        if str(file_run) != str(run_id):
            notes.append(f"the snapshot is of run {file_run!r}; importing it as run {run_id}")
    file_prefix = data.get("prefix")
    if file_prefix is not None and file_prefix != prefix:
        notes.append(
            f"the snapshot was exported under prefix {file_prefix!r}; importing under "
            f"{prefix!r} (the prefix comes from the command line, never from the file)"
        )
    raw_keys = data.get("keys")
    if not isinstance(raw_keys, dict):
        raise SnapshotError("'keys' must be an object of key name -> entry")
    checker = _Checker(max_elements, max_value_bytes)
    types = _table_types()
    entries: list[_Entry] = []
    for name, entry in raw_keys.items():
        where = f"keys.{name}"
        if name in TRANSIENT_KEYS:
            notes.append(f"skipped {name!r}: a short-lived mutex, never imported")
            continue
        if name not in types:
            raise SnapshotError(
                f"key {name[:80]!r} is not a key of a run (the key table has "
                f"{', '.join(types)}): refusing the snapshot"
            )
        if not isinstance(entry, dict):
            raise SnapshotError(f"{where}: expected an object, got {_shown(entry)}")
        extra = set(entry) - {"type", "pttl", "value"}
        if extra:
            raise SnapshotError(f"{where}: unknown fields {sorted(extra)}")
        kind = entry.get("type")
        if kind != types[name]:
            raise SnapshotError(
                f"{where}: type {kind!r}, but {name!r} is a {types[name]} in the key table"
            )
        pttl = entry.get("pttl", -1)
        if pttl is None:
            pttl = -1
        if isinstance(pttl, bool) or not isinstance(pttl, int) or pttl != -1:
            raise SnapshotError(
                f"{where}: has a TTL (pttl {pttl!r}); run keys never expire, so a snapshot "
                "with TTLs is refused"
            )
        if "value" not in entry:
            raise SnapshotError(f"{where}: no value")
        value = entry["value"]
        decoded = _Entry(name, kind, [])
        if kind == "hash":
            decoded.items = checker.pairs(value, where)
        elif kind == "set":
            decoded.items = checker.members(value, where, unique=True)
        elif kind == "list":
            decoded.items = checker.members(value, where, unique=False)
        elif kind == "zset":
            decoded.items = checker.scored(value, where)
        elif kind == "string":
            checker.count(1, where)
            decoded.items = [checker.bytes_of(value, where)]
        else:  # stream
            decoded.stream = checker.stream(value, where)
        _check_records(name, decoded)
        if kind in ("hash", "set", "list", "zset") and not decoded.items:
            notes.append(f"skipped {name!r}: empty (Redis keeps no empty {kind})")
            continue
        entries.append(decoded)
    if not any(e.name == "meta" for e in entries):
        raise SnapshotError("the snapshot has no 'meta' key: it is not a whole run")
    meta = next(e for e in entries if e.name == "meta")
    wanted = str(run_id).encode()
    meta.items = [(f, wanted if f == b"workflow_run_id" else v) for f, v in meta.items]
    return ImportPlan(RunKeys(prefix, run_id), entries, notes)


# --- import ----------------------------------------------------------------------------------


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _side_key(keys: RunKeys, kind: str, token: str, name: str) -> str:
    """A temporary key in the run's hash slot that no run listing or purge ever matches."""
    return f"{keys.prefix}:{kind}-{token}:{{{keys.run_id}}}:{name}"


def _write_temp(client: Any, key: str, entry: _Entry) -> None:
    """Write one key's content into ``key`` (a temporary name) in bounded commands."""
    commands: list[tuple[Any, ...]] = []
    if entry.kind == "string":
        commands.append(("SET", key, entry.items[0]))
    elif entry.kind == "hash":
        for part in _chunks(entry.items, _CHUNK):
            commands.append(("HSET", key, *(x for pair in part for x in pair)))
    elif entry.kind == "set":
        for part in _chunks(entry.items, _CHUNK):
            commands.append(("SADD", key, *part))
    elif entry.kind == "list":
        for part in _chunks(entry.items, _CHUNK):
            commands.append(("RPUSH", key, *part))
    elif entry.kind == "zset":
        for part in _chunks(entry.items, _CHUNK):
            commands.append(("ZADD", key, *(x for member, score in part for x in (score, member))))
    else:
        stream = entry.stream
        assert stream is not None
        if not stream["entries"]:  # an empty stream still exists: a placeholder entry
            commands.append(("XADD", key, "0-1", "_", "_"))
            commands.append(("XDEL", key, "0-1"))
        for entry_id, flat in stream["entries"]:
            commands.append(("XADD", key, entry_id, *flat))
    for part in _chunks(commands, _CHUNK // 10 or 1):
        pipe = client.pipeline(transaction=False)
        for command in part:
            pipe.execute_command(*command)
        pipe.execute_command("PEXPIRE", key, TEMP_TTL_MS)
        pipe.execute()
    if entry.stream is not None:
        _set_stream_id(client, key, entry.stream)


def _set_stream_id(client: Any, key: str, stream: Mapping[str, Any]) -> None:
    """XSETID: the stream's last id and counters as exported (new events keep ascending ids).

    A server without XSETID (fakeredis, the embedded default) is fine when the last id is the
    last entry's (the usual case: events are trimmed from the head); otherwise refused.
    """
    try:
        client.execute_command(
            "XSETID",
            key,
            stream["last_id"],
            "ENTRIESADDED",
            stream["entries_added"],
            "MAXDELETEDID",
            stream["max_deleted_id"],
        )
    except redis.ResponseError as e:
        if "unknown command" not in str(e).lower():
            raise
        entries = stream["entries"]
        if not entries or entries[-1][0] != stream["last_id"]:
            raise SnapshotError(
                "this server has no XSETID, needed to restore the event stream's last id "
                f"{stream['last_id']}; nothing was imported"
            ) from None


def import_run(client: Any, plan: ImportPlan, *, force: bool = False) -> RunKeys:
    """Write a checked snapshot (:func:`validate_snapshot`) as the run ``plan.keys``.

    Everything goes to temporary keys first; one WATCHed MULTI/EXEC then renames them into
    place (and, with ``force``, the old run's keys out of the way), so the run is imported whole
    or not at all, and the old run stays as it was when anything fails.

    Raises:
        RunExistsError: The run has keys already and ``force`` is False.
        SnapshotError: Redis refused a write, or the run changed during the import (nothing
            was imported; the temporary keys are deleted).
    """
    keys = plan.keys
    present = run_keys_present(client, keys)
    if present and not force:
        raise _exists(keys, present)
    token = secrets.token_hex(6)
    temp = {e.name: _side_key(keys, "import", token, e.name) for e in plan.entries}
    trash: list[str] = []
    try:
        for entry in plan.entries:
            _write_temp(client, temp[entry.name], entry)
        trash = _commit(client, keys, plan, temp, token, force)
    except redis.WatchError:
        raise SnapshotError(
            f"workflow run {keys.run_id} changed while it was being imported: nothing was "
            "imported, try again"
        ) from None
    except redis.exceptions.NoPermissionError:
        raise  # the CLI turns it into "write refused"
    except redis.ResponseError as e:
        raise SnapshotError(
            f"Redis refused the snapshot's content: {e}; nothing was imported"
        ) from None
    finally:
        # After a commit these names no longer exist (a no-op); after a failure they go now,
        # or at the latest when their TTL ends if Redis cannot be reached.
        with contextlib.suppress(redis.RedisError):
            for part in _chunks(list(temp.values()), _CHUNK):
                client.unlink(*part)
    for part in _chunks(trash, _CHUNK):
        client.unlink(*part)
    return keys


def _exists(keys: RunKeys, present: Sequence[str]) -> RunExistsError:
    return RunExistsError(
        f"workflow run {keys.run_id} exists under prefix {keys.prefix!r} "
        f"({len(present)} keys): purge it first, or import with --force"
    )


def _commit(
    client: Any,
    keys: RunKeys,
    plan: ImportPlan,
    temp: Mapping[str, str],
    token: str,
    force: bool,
) -> list[str]:
    """Rename the temporary keys into place in one MULTI/EXEC; the old keys' trash names."""
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(*keys.all)
        existing = [k for k in keys.all if int(pipe.exists(k))]
        if existing and not force:
            raise _exists(keys, existing)
        for key in temp.values():  # fresh TTLs: none may expire before EXEC
            if int(pipe.pexpire(key, TEMP_TTL_MS)) != 1:
                raise SnapshotError(f"temporary key {key} vanished during the import")
        names = dict(zip(keys.all, RUN_KEY_NAMES))
        trash = [_side_key(keys, "replaced", token, names[k]) for k in existing]
        pipe.multi()
        for old, gone in zip(existing, trash):
            pipe.execute_command("RENAME", old, gone)  # (the Cluster pipeline blocks .rename)
            pipe.pexpire(gone, TEMP_TTL_MS)
        for entry in plan.entries:
            real = keys.key(entry.name)
            pipe.execute_command("RENAME", temp[entry.name], real)
            pipe.persist(real)
        pipe.execute()
    return trash
