"""Load and check a snapshot file in full before anything is written (see the package doc)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from swarm_redis.constants import TASK_STATUSES, WORKFLOW_RUN_STATUSES
from swarm_redis.engine.commands import KIDS_SLICE
from swarm_redis.engine.keys import RUN_KEY_NAMES, RunKeys, check_prefix
from swarm_redis.errors import SwarmRedisError
from swarm_redis.ops.snapshot.format import (
    _INT64_MAX,
    FORMAT,
    FORMAT_VERSION,
    KEY_TYPES,
    MAX_ELEMENTS,
    MAX_FILE_BYTES,
    MAX_VALUE_BYTES,
    TRANSIENT_KEYS,
    ImportPlan,
    SnapshotError,
    _Entry,
    parse_run_id,
)

_INT_RE = re.compile(rb"-?[0-9]{1,19}")
_STREAM_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
#: Event ids are Redis times in ms (``<ms>-<seq>``); 2^48 ms is past the year 10000.
_STREAM_MS_MAX = 1 << 48
_SCORE_RE = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?")


def _table_types() -> dict[str, str]:
    """Name -> Redis type for the names of the key table as it is now."""
    return {name: KEY_TYPES[name] for name in RUN_KEY_NAMES if name in KEY_TYPES}


class _Bad(Exception):
    """A value check failed; the caller adds where (kept off the hot path)."""


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
    if ms >= _STREAM_MS_MAX:
        raise SnapshotError(
            f"{where}: stream id {value!r} is no Redis time in ms (past the year 10000); a "
            "last id near 2^64 leaves the stream unable to take new events, so every write fails"
        )
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


_CREDIT_RE = re.compile(rb"[0-9]{1,16}q?")
_PROGRESS_RE = re.compile(rb"[0-9]{1,16}:[0-9]{1,16}:[0-9]{1,16}")
_QIDX_RE = re.compile(rb"-?[0-9]{1,19}\|[0-9]{16}\|-?[0-9]{1,19}")


def _credit_problem(raw: bytes) -> str | None:
    return None if _CREDIT_RE.fullmatch(raw) else "expected <credits> or <credits>q"


def _fanout_name_problem(raw: bytes) -> str | None:
    if _is_int(raw) or _slice_name_problem(raw) is None:
        return None
    return "expected <task id> or <task id>#<slice>"


def _fanout_problem(raw: bytes) -> str | None:
    if _PROGRESS_RE.fullmatch(raw) or all(_is_int(i) for i in raw.split(b",")):
        return None
    return "expected <done>:<slice>:<slices> or task ids joined by ','"


def _qidx_problem(raw: bytes) -> str | None:
    return None if _QIDX_RE.fullmatch(raw) else "expected <array>|<16-digit position>|<task id>"


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
    "pcredit": (_int_problem, _credit_problem),
    "fanout": (_fanout_name_problem, _fanout_problem),
    "qidx": (_qidx_problem, None),
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
