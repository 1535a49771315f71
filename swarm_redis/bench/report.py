"""Tables (rich) and the JSON file of a benchmark run, and the targets of issue 6."""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Target:
    """One performance target: where its figure lives and the bound it must meet."""

    scenario: str
    name: str
    path: tuple[str, ...]
    op: str  # ">=" or "<="
    bound: float

    def value(self, results: dict[str, Any]) -> float | None:
        node: Any = results
        for part in self.path:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return float(node) if isinstance(node, (int, float)) else None

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        cmp: Callable[[float, float], bool] = operator.ge if self.op == ">=" else operator.le
        return cmp(value, self.bound)


TARGETS: tuple[Target, ...] = (
    Target("lifecycle", "RedisSwarmState / memory tasks/s", ("lifecycle", "redis_vs_memory"), ">=", 0.10),
    Target("lifecycle", "RedisSwarmState / pipelined tasks/s", ("lifecycle", "redis_vs_pipelined"), ">=", 3.0),
    Target("replicas", "4 replicas / 1 replica tasks/s", ("replicas", "ratio_4_vs_1"), ">=", 1.0),
    Target("flatness", "apply 1,000 D: largest run / smallest run", ("flatness", "ratio"), "<=", 1.5),
    Target("blocking", "max PING latency during large updates (ms)", ("blocking", "max_ms"), "<=", 25.0),
    Target("memory", "Redis bytes per task", ("memory", "bytes_per_task"), "<=", 200.0),
    Target("redis_share", "Redis CPU / client CPU", ("redis_share", "ratio"), ">=", 1.0),
    Target("jobmon_tick", "jobmon tick: JobmonSwarmState / in-memory", ("jobmon_tick", "ratio"), "<=", 3.0),
)  # fmt: skip


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of a scenario that ran: its value and whether it is met."""
    out = []
    for t in TARGETS:
        if t.scenario not in results:
            continue
        value = t.value(results)
        out.append(
            {
                "scenario": t.scenario,
                "target": f"{t.name} {t.op} {t.bound:g}",
                "value": value,
                "met": t.met(value),
            }
        )
    return out


def write_json(results: dict[str, Any], path: str | Path) -> None:
    """Write every figure (targets included) to ``path``."""
    data = dict(results)
    data["targets"] = evaluate_targets(results)
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass
class Grid:
    """A table as plain data, rendered by rich (terminal) or as Markdown (docs)."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]

    def add_row(self, *cells: str) -> None:
        self.rows.append(tuple(cells))

    def rich(self) -> Table:
        """The grid as a rich Table."""
        table = Table(title=self.title, title_justify="left", title_style="bold")
        for i, c in enumerate(self.columns):
            table.add_column(c, justify="left" if i == 0 else "right")
        for row in self.rows:
            table.add_row(*row)
        return table

    def markdown(self) -> str:
        """The grid as a GitHub Markdown table under a bold title line."""
        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|")
        for row in self.rows:
            cells = [_plain(c) for c in row]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _plain(cell: str) -> str:
    """A cell without rich markup (``[bold]x[/]`` -> ``x``)."""
    return re.sub(r"\[/?[a-z ]*\]", "", cell)


def _table(title: str, *columns: str) -> Grid:
    return Grid(title, columns, [])


def grids(results: dict[str, Any]) -> list[Grid]:
    """The setup table, one table per scenario that ran, then the targets."""
    out = []
    m = results.get("machine", {})
    setup = _table("setup", "item", "value")
    for key in ("cores", "python", "redis_version", "redis_py", "hiredis", "server", "platform"):
        setup.add_row(key, _f(m.get(key)))
    cfg = results.get("config", {})
    setup.add_row("mode", "quick" if cfg.get("quick") else "full")
    if cfg.get("scale", 1.0) != 1.0:
        setup.add_row("scale", _f(cfg.get("scale"), 3))
    out.append(setup)
    for name, fn in _RENDERERS.items():
        if name in results:
            out.append(fn(results[name]))
            if name == "lifecycle" and "breakdown" in results[name]:
                out.append(_breakdown(results[name]["breakdown"]))
            if name == "blocking" and results[name].get("variants"):
                out.append(_blocking_variants(results[name]))
    targets = _table("targets", "scenario", "target", "value", "met")
    for t in evaluate_targets(results):
        met = {True: "[green]met[/]", False: "[red]NOT met[/]", None: "n/a"}[t["met"]]
        targets.add_row(t["scenario"], t["target"], _f(t["value"], 3), met)
    out.append(targets)
    return out


def render(results: dict[str, Any], console: Console | None = None) -> None:
    """Print one table per scenario that ran, then the targets."""
    con = console or Console()
    for grid in grids(results):
        con.print(grid.rich())


def to_markdown(results: dict[str, Any]) -> str:
    """Every table as Markdown (for docs/benchmarks.md)."""
    return "\n".join(g.markdown() for g in grids(results))


def _lifecycle(r: dict[str, Any]) -> Grid:
    d = r["dag"]
    title = (
        f"lifecycle: {d['tasks']:,} tasks, {d['layers']} layers x {d['width']}, fan-in "
        f"{d['fan_in']}, batches of {r['batch_size']}; claim -> Q -> R -> D -> propagate"
    )
    t = _table(title, "implementation", "tasks/s", "tasks", "seconds", "client CPU µs/task",
               "Redis CPU µs/task", "CPU µs/task", "Redis vs it")  # fmt: skip
    redis_rate = r["redis_tasks_per_s"]
    if r.get("repeat", 1) > 1:
        t.title += f"; best of {r['repeat']} runs"
    labels = {
        "redis": "RedisSwarmState (Lua)",
        "memory": "memory.SwarmState",
        "pipelined": "pipelined (WATCH/MULTI)",
        "naive": "naive (1 command/call)",
    }
    for key, label in labels.items():
        x = r[key]
        client = x.get("us_per_task_client")
        if client is None and x.get("tasks"):
            client = x["client_cpu_s"] / x["tasks"] * 1e6
        rate = x["tasks_per_s"]
        t.add_row(
            label + (" (partial run)" if key == "naive" and not x.get("complete") else ""),
            _f(rate),
            _f(x["tasks"]),
            _f(x["seconds"], 2),
            _f(client),
            _f(x.get("us_per_task_redis")),
            _f(x.get("cpu_us_per_task")),
            "1" if key == "redis" else (_f(redis_rate / rate, 3) + "x" if rate else "-"),
        )
    return t


def _breakdown(b: dict[str, Any]) -> Grid:
    t = _table(
        "lifecycle breakdown (Redis path, µs per task): Redis CPU; time inside scripts "
        "(EVALSHA), of which inside Redis commands, the rest being Lua and call overhead",
        "operation", "Redis CPU", "client CPU", "in scripts", "in commands",
        "Lua + call overhead", "top commands inside scripts: calls, µs",
    )  # fmt: skip
    sums = [0.0] * 5
    for op, x in b.items():
        cmds = dict(x["commands"])
        script = cmds.pop("evalsha", [0, 0.0])[1]
        inside = sum(us for _, us in cmds.values())
        top = list(cmds.items())[:6]
        text = ", ".join(f"{c} {n:.3g}x {us:.3g}" for c, (n, us) in top)
        row = [x["redis_cpu_us"], x["client_cpu_us"], script, inside, script - inside]
        sums = [a + b for a, b in zip(sums, row)]
        t.add_row(op, *(_f(v, 2) for v in row), text)
    t.add_row("[bold]total[/]", *(_f(v, 2) for v in sums), "")
    return t


def _replicas(r: dict[str, Any]) -> Grid:
    t = _table(
        f"replicas: {r['dag']['tasks']:,} tasks shared by N processes, batches of {r['batch_size']}",
        "replicas", "tasks/s", "seconds", "tasks per replica", "clients CPU s", "Redis CPU s",
        "idle polls", "attach s",
    )  # fmt: skip
    for k, x in r["rounds"].items():
        t.add_row(
            k,
            _f(x["tasks_per_s"]),
            _f(x["seconds"], 2),
            " / ".join(f"{n:,}" for n in x["per_replica_tasks"]),
            _f(x["clients_cpu_s"], 2),
            _f(x["redis_cpu_s"], 2),
            _f(x["idle_polls"]),
            " / ".join(f"{a:.1f}" for a in x["attach_s"]),
        )
    return t


def _flatness(r: dict[str, Any]) -> Grid:
    t = _table(
        f"flatness: apply_update of {r['update_changes']:,} D changes with propagation "
        f"(width {r['shape']['width']}, fan-in 3); ratio {r['ratio_of']} = {_f(r['ratio'], 3)} "
        f"(medians; of the minimums: {_f(r.get('ratio_min'), 3)})",
        "run tasks", "median ms", "min ms", "Redis ms (median)", "queued per update",
        "register s",
    )  # fmt: skip
    for n, x in r["sizes"].items():
        t.add_row(
            f"{int(n):,}",
            _f(x["apply_ms_median"], 2),
            _f(x["apply_ms_min"], 2),
            _f(x["redis_ms_median"], 2),
            _f(x["queued_per_update"][0] if x["queued_per_update"] else None),
            _f(x["register_s"], 1),
        )
    return t


def _blocking(r: dict[str, Any]) -> Grid:
    t = _table(
        f"blocking: PINGs from another process on a {r['run_tasks']:,}-task run "
        f"(chunk budget {r['chunk_budget']}); longest Redis command (SLOWLOG): "
        f"{_f(r['slowlog_max_ms'], 2)} ms",
        "phase", "seconds", "PINGs", "max ms", "p99 ms", "p50 ms",
    )  # fmt: skip
    rows = [("idle (before)", r["idle"], None)]
    if r.get("register"):
        rows.append(("registration of the run", r["register"], None))
    rows += [(name, x, x["seconds"]) for name, x in r["phases"].items()]
    for name, x, secs in rows:
        t.add_row(
            name,
            _f(secs, 2),
            _f(x["pings"]),
            _f(x["max_ms"], 2),
            _f(x["p99_ms"], 2),
            _f(x["p50_ms"], 3),
        )
    t.add_row("[bold]updates overall[/]", "", _f(r["pings"]), _f(r["max_ms"], 2),
              _f(r["p99_ms"], 2), "")  # fmt: skip
    return t


def _blocking_variants(r: dict[str, Any]) -> Grid:
    t = _table(
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
            _f(secs[0], 2),
            _f(secs[-1], 2),
            _f(x["pings"]),
            _f(x["max_ms"], 2),
            _f(x["p99_ms"], 2),
            _f(x["slowlog_max_ms"], 2),
        )
    return t


def _memory(r: dict[str, Any]) -> Grid:
    t = _table(
        f"memory: {r['tasks']:,}-task run after registration; INFO used_memory delta "
        f"{_f(r['used_memory_delta'])} B = {_f(r['bytes_per_task'])} B/task",
        "key", "bytes (MEMORY USAGE)", "bytes/task",
    )  # fmt: skip
    n = r["tasks"]
    for key, size in sorted(r["by_key"].items(), key=lambda kv: -kv[1]):
        t.add_row(key, _f(size), _f(size / n, 1))
    t.add_row("[bold]all keys[/]", _f(r["keys_total"]), _f(r["keys_bytes_per_task"]))
    return t


def _redis_share(r: dict[str, Any]) -> Grid:
    t = _table("redis_share: CPU during the lifecycle's Redis path", "process", "CPU s", "share")
    srv, cli = r["redis_cpu_s"], r["client_cpu_s"]
    total = (srv or 0) + (cli or 0)
    t.add_row(
        "redis-server (INFO cpu)",
        _f(srv, 3),
        _f(100 * (srv or 0) / total, 1) + " %" if total else "-",
    )
    t.add_row("  of which in scripts (commandstats)", _f(r["redis_script_s"], 3), "")
    t.add_row(
        "client (process_time)",
        _f(cli, 3),
        _f(100 * (cli or 0) / total, 1) + " %" if total else "-",
    )
    t.add_row("[bold]ratio Redis / client[/]", _f(r["ratio"], 3), "")
    return t


def _jobmon_tick(r: dict[str, Any]) -> Grid:
    if "skipped" in r:
        t = _table("jobmon_tick: skipped", "note")
        t.add_row(r["skipped"])
        return t
    t = _table(
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
            _f(row["s"], 4),
            _f(ratio, 2) + " x",
            _f(row.get("apply_s"), 4),
            _f(row.get("round_trips")),
        )
    return t


_RENDERERS: dict[str, Callable[[dict[str, Any]], Grid]] = {
    "lifecycle": _lifecycle,
    "redis_share": _redis_share,
    "replicas": _replicas,
    "memory": _memory,
    "flatness": _flatness,
    "blocking": _blocking,
    "jobmon_tick": _jobmon_tick,
}
