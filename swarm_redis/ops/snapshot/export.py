"""Export: a run's keys of the key table, read by name, as a JSON-ready snapshot."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from swarm_redis.engine.commands import text
from swarm_redis.engine.keys import RUN_KEY_NAMES, RunKeys
from swarm_redis.engine.replies import hash_items
from swarm_redis.errors import UnknownRunError
from swarm_redis.ops.snapshot.check import validate_snapshot
from swarm_redis.ops.snapshot.format import (
    _CHUNK,
    FORMAT,
    FORMAT_VERSION,
    TRANSIENT_KEYS,
    SnapshotError,
    _enc,
    _sort_key,
)


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
        SnapshotError: A key fails the checks of import (a damaged record, a key of the wrong
            type): the message names it.
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
    snapshot = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "prefix": keys.prefix,
        "run_id": str(keys.run_id),
        "exported_ms": int(time.time() * 1000),
        "keys": dumped,
    }
    try:  # the checks import makes: a file import would refuse is not written
        validate_snapshot(snapshot, prefix=keys.prefix)
    except SnapshotError as e:
        raise SnapshotError(
            f"refusing to export workflow run {keys.run_id} under prefix {keys.prefix!r}: "
            f"{e} (import would refuse it; `swarm-redis verify` reports damaged records)"
        ) from None
    return snapshot


def save_snapshot(snapshot: Mapping[str, Any], path: str | Path) -> None:
    """Write a snapshot as JSON (``-`` is not special: pass a real path).

    Written to a temporary file beside ``path`` and renamed over it, so a failure midway (a
    full disk) leaves an earlier snapshot at ``path`` whole and no partial file behind.
    """
    target = Path(path)
    data = orjson.dumps(snapshot, option=orjson.OPT_APPEND_NEWLINE)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:  # a new file, with the umask's permissions
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
