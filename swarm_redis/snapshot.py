"""Export a run to a JSON snapshot and import it back, key by key.

The snapshot holds every key of the run (found with SCAN on the run's hash tag), each with its
Redis type, its remaining TTL in milliseconds (-1: none) and its full content:

* string: the value; hash: ``[[field, value], ...]`` sorted by field; set: sorted members;
  list: the elements in order; zset: ``[[member, score], ...]``;
* stream: ``{"entries": [[id, [[field, value], ...]], ...], "last_id", "entries_added",
  "max_deleted_id"}``; import re-adds the entries with their ids and restores the stream's
  last id and counters with XSETID, so new events keep ascending ids. Consumer groups are not
  kept (swarm_redis creates none).

Byte strings that are valid UTF-8 are stored as JSON strings, others as ``{"b64": "..."}``.
Keys are stored by their name after the run's base (``meta``, ``s:G`` ...). A TTL is restored
as the remaining time at export. An export of a live run reads each key as it is at that
moment, not the whole run at one instant: export a run that is quiet (or stopped).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from swarm_redis.commands import text
from swarm_redis.errors import SwarmRedisError, UnknownRunError
from swarm_redis.inspect import scan_keys
from swarm_redis.keys import RunKeys

__all__ = [
    "FORMAT",
    "RunExistsError",
    "SnapshotError",
    "export_run",
    "import_run",
    "load_snapshot",
    "run_keys_present",
    "save_snapshot",
]

FORMAT = "swarm-redis-snapshot"
FORMAT_VERSION = 1
_CHUNK = 500


class SnapshotError(SwarmRedisError, ValueError):
    """The file is not a snapshot this version can import."""


class RunExistsError(SwarmRedisError, FileExistsError):
    """Import refused: the run already has keys (pass ``force=True`` to replace them)."""


def _enc(value: Any) -> Any:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}


def _dec(value: Any) -> bytes:
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    return str(value).encode("utf-8")


def _sort_key(item: Any) -> Any:
    first = item[0] if isinstance(item, list) else item
    return (1, first["b64"]) if isinstance(first, dict) else (0, first)


def run_keys_present(client: Any, keys: RunKeys) -> list[str]:
    """Every existing key of the run (SCAN MATCH on its hash tag)."""
    return sorted(scan_keys(client, keys.match_all))


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
            pairs = fields.items() if isinstance(fields, Mapping) else _pairs(fields)
            entries.append([text(entry_id), [[_enc(f), _enc(v)] for f, v in pairs]])
        if len(page) < _CHUNK * 4:
            break
        start = f"({text(page[-1][0])}"
    return {
        "entries": entries,
        "last_id": text(info["last-generated-id"]),
        "entries_added": int(info.get("entries-added", len(entries))),
        "max_deleted_id": text(info.get("max-deleted-entry-id", "0-0")),
    }


def _pairs(flat: Sequence[Any]) -> list[tuple[Any, Any]]:
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


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
        value = [[_enc(m), repr(float(s))] for m, s in client.zscan_iter(key, count=_CHUNK * 4)]
    elif kind == "stream":
        value = _read_stream(client, key)
    else:
        raise SnapshotError(f"key {key} has type {kind}, which snapshots do not support")
    return {"type": kind, "pttl": int(pttl), "value": value}


def export_run(client: Any, keys: RunKeys) -> dict[str, Any]:
    """The run as a JSON-ready snapshot dict.

    Raises:
        UnknownRunError: The run has no keys at all.
    """
    found = run_keys_present(client, keys)
    if not found:
        raise UnknownRunError(f"workflow run {keys.run_id} not found under prefix {keys.prefix!r}")
    dumped = {}
    for key in found:
        entry = _dump(client, key)
        if entry is not None:  # deleted between SCAN and read
            dumped[key[len(keys.base) :]] = entry
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


def load_snapshot(path: str | Path) -> dict[str, Any]:
    """Read and check a snapshot file.

    Raises:
        SnapshotError: Not a swarm-redis snapshot, or of a newer format version.
    """
    try:
        data = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as e:
        raise SnapshotError(f"{path}: not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapshotError(f"{path}: not a {FORMAT} file")
    if int(data.get("version", 0)) > FORMAT_VERSION:
        raise SnapshotError(f"{path}: snapshot format {data['version']} is newer than this tool")
    return data


# --- import ----------------------------------------------------------------------------------


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _restore(pipe: Any, key: str, entry: Mapping[str, Any]) -> None:
    kind, value = entry["type"], entry["value"]
    if kind == "string":
        pipe.execute_command("SET", key, _dec(value))
    elif kind == "hash":
        for part in _chunks(value, _CHUNK):
            pipe.execute_command("HSET", key, *(_dec(x) for pair in part for x in pair))
    elif kind == "set":
        for part in _chunks(value, _CHUNK):
            pipe.execute_command("SADD", key, *(_dec(m) for m in part))
    elif kind == "list":
        for part in _chunks(value, _CHUNK):
            pipe.execute_command("RPUSH", key, *(_dec(v) for v in part))
    elif kind == "zset":
        for part in _chunks(value, _CHUNK):
            pipe.execute_command("ZADD", key, *(x for m, s in part for x in (s, _dec(m))))
    elif kind == "stream":
        entries = value["entries"]
        if not entries:  # an empty stream still exists: create it with a placeholder entry
            pipe.execute_command("XADD", key, "0-1", "_", "_")
            pipe.execute_command("XDEL", key, "0-1")
        for entry_id, fields in entries:
            pipe.execute_command("XADD", key, entry_id, *(_dec(x) for f in fields for x in f))
        pipe.execute_command(
            "XSETID",
            key,
            value["last_id"],
            "ENTRIESADDED",
            value["entries_added"],
            "MAXDELETEDID",
            value["max_deleted_id"],
        )
    else:
        raise SnapshotError(f"key {key}: unsupported type {kind}")
    if int(entry.get("pttl", -1)) > 0:
        pipe.execute_command("PEXPIRE", key, int(entry["pttl"]))


def import_run(
    client: Any, snapshot: Mapping[str, Any], *, prefix: str | None = None, force: bool = False
) -> RunKeys:
    """Write a snapshot's keys back (under ``prefix``, default the snapshot's own).

    Raises:
        RunExistsError: The run has keys already and ``force`` is False (with ``force`` they
            are deleted first).
    """
    keys = RunKeys(prefix or str(snapshot["prefix"]), str(snapshot["run_id"]))
    present = run_keys_present(client, keys)
    if present and not force:
        raise RunExistsError(
            f"workflow run {keys.run_id} exists under prefix {keys.prefix!r} "
            f"({len(present)} keys): purge it first, or import with --force"
        )
    for part in _chunks(present, _CHUNK):
        client.unlink(*part)
    for name, entry in snapshot["keys"].items():
        pipe = client.pipeline(transaction=False)
        _restore(pipe, keys.base + name, entry)
        pipe.execute()
    return keys
