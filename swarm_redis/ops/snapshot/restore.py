"""Import: write a checked snapshot into temporary keys, then rename them into place at once."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from swarm_redis.engine.keys import RUN_KEY_NAMES, RunKeys
from swarm_redis.ops.snapshot.format import (
    _CHUNK,
    TEMP_TTL_MS,
    ImportPlan,
    RunExistsError,
    SnapshotError,
    _chunks,
    _Entry,
    run_keys_present,
)


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
