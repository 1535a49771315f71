"""One table per scenario (:class:`~swarm_redis.bench.grid.Grid`), built from its figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from swarm_redis.bench.grid import Grid, fmt, table
from swarm_redis.bench.loop import OPERATIONS


def _lifecycle(r: dict[str, Any]) -> Grid:
    d = r["dag"]
    title = (
        f"lifecycle: {d['tasks']:,} tasks, {d['layers']} layers x {d['width']}, fan-in "
        f"{d['fan_in']}, batches of {r['batch_size']}; claim -> Q -> R -> D -> propagate"
    )
    t = table(title, "implementation", "tasks/s", "tasks", "seconds", "client CPU µs/task",
               "Redis CPU µs/task", "CPU µs/task", "Redis vs it")  # fmt: skip
    redis_rate = r["redis_tasks_per_s"]
    if r.get("repeat", 1) > 1:
        t.title += f"; best of {r['repeat']} runs"
    for key, label in _LABELS.items():
        x = r.get(key)
        if x is None:  # figures of a build before the layout floors
            continue
        client = x.get("us_per_task_client")
        if client is None and x.get("tasks"):
            client = x["client_cpu_s"] / x["tasks"] * 1e6
        rate = x["tasks_per_s"]
        t.add_row(
            label + (" (partial run)" if key == "naive" and not x.get("complete") else ""),
            fmt(rate),
            fmt(x["tasks"]),
            fmt(x["seconds"], 2),
            fmt(client),
            fmt(x.get("us_per_task_redis")),
            fmt(x.get("cpu_us_per_task")),
            "1" if key == "redis" else (fmt(redis_rate / rate, 3) + "x" if rate else "-"),
        )
    return t


def _breakdown(label: str, b: dict[str, Any]) -> Grid:
    t = table(
        f"lifecycle breakdown, {label} (µs per task): Redis CPU; time inside EVALSHA (scripts), "
        "of which inside Redis commands, the rest being Lua and call overhead",
        "operation", "Redis CPU", "client CPU", "in scripts", "in commands",
        "Lua + call overhead", "top commands: calls, µs",
    )  # fmt: skip
    sums = [0.0] * 5
    for op, x in b.items():
        cmds = dict(x["commands"])
        script = cmds.pop("evalsha", [0, 0.0])[1]
        inside = sum(us for _, us in cmds.values())
        top = list(cmds.items())[:6]
        text = ", ".join(f"{c} {n:.3g}x {us:.3g}" for c, (n, us) in top)
        lua = script - inside if script else 0.0
        row = [x["redis_cpu_us"], x["client_cpu_us"], script, inside, lua]
        sums = [a + b for a, b in zip(sums, row)]
        t.add_row(op, *(fmt(v, 2) for v in row), text)
    t.add_row("[bold]total[/]", *(fmt(v, 2) for v in sums), "")
    return t


_LABELS = {
    "redis": "RedisSwarmState (Lua)",
    "memory": "memory.SwarmState",
    "pipelined": "pipelined (WATCH/MULTI)",
    "naive": "naive (1 command/call)",
    "floor_native": "floor: native layout (writes only)",
    "floor_record": "floor: record layout (writes only)",
}


def _per_op(per_op: dict[str, Any]) -> Grid:
    """Redis CPU (client CPU) µs per task of every Redis implementation, per operation."""
    names = list(per_op)
    t = table(
        "lifecycle per operation: Redis CPU µs per task (client CPU µs per task), "
        "instrumented runs (INFO around every call)",
        "operation", *(_LABELS[n] + (" (partial)" if n == "naive" else "") for n in names),
    )  # fmt: skip
    totals = {n: [0.0, 0.0] for n in names}
    for op in OPERATIONS:
        cells = []
        for n in names:
            x = per_op[n]["ops"].get(op)
            if x is None:
                cells.append("-")
                continue
            totals[n][0] += x["redis_cpu_us"]
            totals[n][1] += x["client_cpu_us"]
            cells.append(f"{fmt(x['redis_cpu_us'], 2)} ({fmt(x['client_cpu_us'], 2)})")
        t.add_row(op, *cells)
    t.add_row(
        "[bold]total[/]", *(f"{fmt(a, 2)} ({fmt(b, 2)})" for a, b in totals.values())
    )  # fmt: skip
    t.add_row("tasks", *(fmt(per_op[n]["tasks"]) for n in names))
    return t


def _lifecycle_tables(r: dict[str, Any]) -> list[Grid]:
    out = [_lifecycle(r)]
    if r.get("per_op"):
        out.append(_per_op(r["per_op"]))
        if r.get("breakdown_commands"):
            out += [_breakdown(_LABELS[n], x["ops"]) for n, x in r["per_op"].items()]
    return out


def _replicas(r: dict[str, Any]) -> Grid:
    t = table(
        f"replicas: {r['dag']['tasks']:,} tasks shared by N processes, batches of {r['batch_size']}",
        "replicas", "implementation", "tasks/s", "ours vs it", "seconds", "tasks per replica",
        "clients CPU s", "Redis CPU s", "Redis µs/task", "idle polls", "WATCH retries",
        "attach s",
    )  # fmt: skip
    pipelined = r.get("pipelined_rounds", {})
    for k, ours in r["rounds"].items():
        for name, x in (("ours (Lua)", ours), ("pipelined", pipelined.get(k))):
            if x is None:
                continue
            ratio = r.get("vs_pipelined", {}).get(k) if name == "pipelined" else None
            t.add_row(
                k,
                name,
                fmt(x["tasks_per_s"]),
                fmt(ratio, 2) + "x" if ratio is not None else "",
                fmt(x["seconds"], 2),
                " / ".join(f"{n:,}" for n in x["per_replica_tasks"]),
                fmt(x["clients_cpu_s"], 2),
                fmt(x["redis_cpu_s"], 2),
                fmt(x.get("us_per_task_redis")),
                fmt(x["idle_polls"]),
                fmt(x.get("watch_retries")),
                " / ".join(f"{a:.1f}" for a in x["attach_s"]),
            )
    return t


def _peers(r: dict[str, Any]) -> Grid:
    t = table(
        f"peers: RQ {r['rq_version']} and RedisSwarmState on the same Redis, {r['jobs']:,} jobs "
        "per workload; register = create and queue, run = worker lifecycle",
        "workload", "implementation", "register tasks/s", "register Redis µs/task",
        "run tasks/s", "run Redis µs/task", "run client µs/task", "total tasks/s",
        "total Redis µs/task", "ours vs it (run)", "all done",
    )  # fmt: skip
    labels = {"plain": "plain jobs", "dag": "depends_on DAG, fan-in 3"}
    for kind, w in r["workloads"].items():
        d = w["shape"]
        name = labels.get(kind, kind) + (
            f" ({d['layers']} x {d['width']})" if kind == "dag" else ""
        )
        for side, label in (("ours", "RedisSwarmState"), ("rq", "RQ SimpleWorker")):
            x = w[side]
            t.add_row(
                name,
                label,
                fmt(x["register"]["tasks_per_s"]),
                fmt(x["register"].get("us_per_task_redis")),
                fmt(x["run"]["tasks_per_s"]),
                fmt(x["run"].get("us_per_task_redis")),
                fmt(x["run"].get("us_per_task_client")),
                fmt(x["total_tasks_per_s"]),
                fmt(x["total_us_per_task_redis"]),
                fmt(w["run_ratio"], 2) + "x" if side == "rq" and w["run_ratio"] else "",
                fmt(x["run"].get("all_done")),
            )
    return t


def _flatness(r: dict[str, Any]) -> Grid:
    t = table(
        f"flatness: apply_update of {r['update_changes']:,} D changes with propagation "
        f"(width {r['shape']['width']}, fan-in 3); ratio {r['ratio_of']} = {fmt(r['ratio'], 3)} "
        f"(medians; of the minimums: {fmt(r.get('ratio_min'), 3)})",
        "run tasks", "median ms", "min ms", "Redis ms (median)", "queued per update",
        "register s",
    )  # fmt: skip
    for n, x in r["sizes"].items():
        t.add_row(
            f"{int(n):,}",
            fmt(x["apply_ms_median"], 2),
            fmt(x["apply_ms_min"], 2),
            fmt(x["redis_ms_median"], 2),
            fmt(x["queued_per_update"][0] if x["queued_per_update"] else None),
            fmt(x["register_s"], 1),
        )
    return t


def _blocking(r: dict[str, Any]) -> Grid:
    t = table(
        f"blocking: PINGs from another process on a {r['run_tasks']:,}-task run "
        f"(chunk budget {r['chunk_budget']}); longest Redis command (SLOWLOG): "
        f"{fmt(r['slowlog_max_ms'], 2)} ms",
        "phase", "seconds", "PINGs", "max ms", "p99 ms", "p50 ms",
    )  # fmt: skip
    rows = [("idle (before)", r["idle"], None)]
    if r.get("register"):
        rows.append(("registration of the run", r["register"], None))
    rows += [(name, x, x["seconds"]) for name, x in r["phases"].items()]
    for name, x, secs in rows:
        t.add_row(
            name,
            fmt(secs, 2),
            fmt(x["pings"]),
            fmt(x["max_ms"], 2),
            fmt(x["p99_ms"], 2),
            fmt(x["p50_ms"], 3),
        )
    t.add_row("[bold]updates overall[/]", "", fmt(r["pings"]), fmt(r["max_ms"], 2),
              fmt(r["p99_ms"], 2), "")  # fmt: skip
    return t


def _blocking_fanout(r: dict[str, Any]) -> Grid:
    x = r["fanout"]
    t = table(
        f"blocking: one completion with {x['children']:,} children (PINGs from another process)",
        "seconds", "queued", "PINGs", "max ms", "p99 ms", "BUSY", "longest command ms",
        "script calls", "Redis CPU ms/call", "register s", "register max ms",
    )  # fmt: skip
    t.add_row(
        fmt(x["seconds"], 2), fmt(x["queued"]), fmt(x["pings"]), fmt(x["max_ms"], 2),
        fmt(x["p99_ms"], 2), fmt(x["busy"]), fmt(x["slowlog_max_ms"], 2),
        fmt(x.get("script_calls")), fmt(x.get("redis_cpu_ms_per_call"), 2),
        fmt(x.get("register_s"), 1), fmt(x.get("register_max_ms"), 2),
    )  # fmt: skip
    return t


def _blocking_variants(r: dict[str, Any]) -> Grid:
    t = table(
        f"blocking variants: the same R and D updates of {r['update_changes']:,} changes "
        "(fresh layers each)",
        "chunking", "R seconds", "D seconds", "PINGs", "max ms", "p99 ms",
        "longest command ms",
    )  # fmt: skip
    rows = {f"budget {r['chunk_budget']} (default)": r, **r["variants"]}
    for name, x in rows.items():
        secs = [p["seconds"] for p in x["phases"].values()]
        t.add_row(
            name,
            fmt(secs[0], 2),
            fmt(secs[-1], 2),
            fmt(x["pings"]),
            fmt(x["max_ms"], 2),
            fmt(x["p99_ms"], 2),
            fmt(x["slowlog_max_ms"], 2),
        )
    return t


def _bounded_calls(r: dict[str, Any]) -> Grid:
    t = table(
        "blocking, bounded calls: PINGs from another process while big reads, queue calls and "
        "claims run (each on its own run)",
        "case", "seconds", "PINGs", "max ms", "p99 ms", "BUSY", "longest command ms",
    )  # fmt: skip
    t.add_row("idle (before)", "", fmt(r["idle"]["pings"]), fmt(r["idle"]["max_ms"], 2),
              fmt(r["idle"]["p99_ms"], 2), "", "")  # fmt: skip
    for name, x in r["cases"].items():
        t.add_row(
            name,
            fmt(x["seconds"], 2),
            fmt(x["pings"]),
            fmt(x["max_ms"], 2),
            fmt(x["p99_ms"], 2),
            fmt(x["busy"]),
            fmt(x["slowlog_max_ms"], 2),
        )
    return t


def _memory(r: dict[str, Any]) -> Grid:
    t = table(
        f"memory: {r['tasks']:,}-task run after registration; INFO used_memory delta "
        f"{fmt(r['used_memory_delta'])} B = {fmt(r['bytes_per_task'])} B/task",
        "key", "bytes (MEMORY USAGE)", "bytes/task",
    )  # fmt: skip
    n = r["tasks"]
    for key, size in sorted(r["by_key"].items(), key=lambda kv: -kv[1]):
        t.add_row(key, fmt(size), fmt(size / n, 1))
    t.add_row("[bold]all keys[/]", fmt(r["keys_total"]), fmt(r["keys_bytes_per_task"]))
    return t


def _redis_share(r: dict[str, Any]) -> Grid:
    t = table("redis_share: CPU during the lifecycle's Redis path", "process", "CPU s", "share")
    srv, cli = r["redis_cpu_s"], r["client_cpu_s"]
    total = (srv or 0) + (cli or 0)
    t.add_row(
        "redis-server (INFO cpu)",
        fmt(srv, 3),
        fmt(100 * (srv or 0) / total, 1) + " %" if total else "-",
    )
    t.add_row("  of which in scripts (commandstats)", fmt(r["redis_script_s"], 3), "")
    t.add_row(
        "client (process_time)",
        fmt(cli, 3),
        fmt(100 * (cli or 0) / total, 1) + " %" if total else "-",
    )
    t.add_row("[bold]ratio Redis / client[/]", fmt(r["ratio"], 3), "")
    return t


def _jobmon_tick(r: dict[str, Any]) -> Grid:
    t = table(
        f"jobmon_tick: one jobmon Scheduler tick, then its apply, {r['tasks']:,} ready tasks "
        f"(best of {r['rounds']}; RedisSwarmState: one round)",
        "state", "tick s", "vs in-memory", "apply s", "round trips (tick + apply)",
    )  # fmt: skip
    names = (
        ("memory", "jobmon SwarmState (in memory)"),
        ("redis", "RedisSwarmState"),
        ("dropin", "JobmonSwarmState (read-ahead)"),
    )
    for key, label in names:
        row = r[key]
        ratio = row["s"] / r["memory"]["s"] if r["memory"]["s"] else None
        t.add_row(
            label,
            fmt(row["s"], 4),
            fmt(ratio, 2) + " x",
            fmt(row.get("apply_s"), 4),
            fmt(row.get("round_trips")),
        )
    return t


def _blocking_tables(r: dict[str, Any]) -> list[Grid]:
    out = [_blocking(r)]
    if r.get("variants"):
        out.append(_blocking_variants(r))
    if r.get("bounded_calls"):
        out.append(_bounded_calls(r["bounded_calls"]))
    if r.get("fanout"):
        out.append(_blocking_fanout(r))
    return out


def _one(fn: Callable[[dict[str, Any]], Grid]) -> Callable[[dict[str, Any]], list[Grid]]:
    return lambda r: [fn(r)]


#: The tables of each scenario, in report order.
SCENARIO_TABLES: dict[str, Callable[[dict[str, Any]], list[Grid]]] = {
    "lifecycle": _lifecycle_tables,
    "redis_share": _one(_redis_share),
    "replicas": _one(_replicas),
    "peers": _one(_peers),
    "memory": _one(_memory),
    "flatness": _one(_flatness),
    "blocking": _blocking_tables,
    "jobmon_tick": _one(_jobmon_tick),
}


def scenario_tables(name: str, r: dict[str, Any]) -> list[Grid]:
    """The tables of one scenario's figures (one note when the scenario was skipped)."""
    if "skipped" in r:
        t = table(f"{name}: skipped", "note")
        t.add_row(r["skipped"])
        return [t]
    return SCENARIO_TABLES[name](r)
