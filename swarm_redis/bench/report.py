"""The report of a benchmark run: every table (rich in a terminal, Markdown for the docs), the
targets with their verdicts, and the JSON file of every figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from swarm_redis.bench.grid import Grid, fmt, table
from swarm_redis.bench.tables import SCENARIO_TABLES, scenario_tables
from swarm_redis.bench.targets import evaluate_targets

_VERDICT_STYLE = {"met": "[green]met[/]", "NOT met": "[red]NOT met[/]"}


def write_json(results: dict[str, Any], path: str | Path) -> None:
    """Write every figure (targets included) to ``path``."""
    data = dict(results)
    data["targets"] = evaluate_targets(results)
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _load_cell(load: dict[str, Any] | None) -> str:
    if not load:
        return "-"
    avg, others = load.get("loadavg_1m_max"), load.get("others_cores_max")
    return f"load {fmt(avg, 1)}, others {fmt(others, 2)} cores"


def targets_grid(results: dict[str, Any]) -> Grid:
    """The targets: value, verdict and the load of the machine during their measurements."""
    t = table(
        "targets (load: highest 1-minute load average, and CPU cores other processes used, "
        "during the measurements)",
        "scenario", "target", "value", "verdict", "load",
    )  # fmt: skip
    for x in evaluate_targets(results):
        style = _VERDICT_STYLE.get(x["verdict"], x["verdict"])
        if x["verdict"].startswith("not met"):
            style = f"[yellow]{x['verdict']}[/]"
        name = f"[bold]{x['target']}[/]" if x["cost"] else x["target"]
        t.add_row(x["scenario"], name, fmt(x["value"], 3), style, _load_cell(x["load"]))
    return t


def grids(results: dict[str, Any]) -> list[Grid]:
    """The setup table, the tables of every scenario that ran, then the targets."""
    m = results.get("machine", {})
    setup = table("setup", "item", "value")
    for key in ("cores", "python", "redis_version", "redis_py", "hiredis", "server", "platform"):
        setup.add_row(key, fmt(m.get(key)))
    cfg = results.get("config", {})
    setup.add_row("mode", "quick" if cfg.get("quick") else "full")
    if cfg.get("scale", 1.0) != 1.0:
        setup.add_row("scale", fmt(cfg.get("scale"), 3))
    out = [setup]
    for name in SCENARIO_TABLES:
        if name in results:
            out += scenario_tables(name, results[name])
    out.append(targets_grid(results))
    return out


def render(results: dict[str, Any], console: Console | None = None) -> None:
    """Print one table per scenario that ran, then the targets."""
    con = console or Console()
    for grid in grids(results):
        con.print(grid.rich())


def to_markdown(results: dict[str, Any]) -> str:
    """Every table as Markdown (for docs/benchmarks.md)."""
    return "\n".join(g.markdown() for g in grids(results))


__all__ = ["evaluate_targets", "grids", "render", "to_markdown", "write_json"]
