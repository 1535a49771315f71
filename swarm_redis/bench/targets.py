"""The suite's performance targets and their verdicts, computed from the figures and from the
machine's load during the measurements each figure comes from.

A target either has a bound (``>=`` or ``<=``) or is only reported (``op="report"``). A missed
wall-clock target measured while other processes used a noticeable share of the CPU
(``others_cores`` >= :data:`LOADED_CORES` in any of its measurements) gets the verdict "not met
under load": the figure is disturbed, rerun on a quiet machine before believing it. CPU-time
and memory figures move little with the load; their verdicts are not qualified.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: CPU cores other processes used during a measurement above which it counts as loaded.
LOADED_CORES = 0.25

Path = tuple[str, ...]


def _get(results: dict[str, Any], path: Path) -> Any:
    node: Any = results
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@dataclass(frozen=True)
class Target:
    """One performance target: where its figure lives, its bound and its measurements' loads.

    ``loads``: paths of the ``load`` dicts (see :class:`~swarm_redis.bench.probes.LoadWatch`)
    of the measurements the figure is computed from; ``wall_clock``: whether the figure is a
    wall-clock one (moved by the load); ``cost``: one of the cost-model targets (listed first).
    """

    scenario: str
    name: str
    path: Path
    op: str  # ">=", "<=" or "report"
    bound: float | None = None
    loads: tuple[Path, ...] = ()
    wall_clock: bool = True
    cost: bool = False

    def value(self, results: dict[str, Any]) -> float | None:
        """The figure, or None when it was not measured."""
        node = _get(results, self.path)
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            return None
        return float(node)

    def met(self, value: float | None) -> bool | None:
        """Whether ``value`` meets the bound (None: no value, or a reported figure)."""
        if value is None or self.bound is None or self.op == "report":
            return None
        cmp: Callable[[float, float], bool] = operator.ge if self.op == ">=" else operator.le
        return cmp(value, self.bound)

    def label(self) -> str:
        """The target as text: name and bound."""
        return self.name if self.op == "report" else f"{self.name} {self.op} {self.bound:g}"


def _load_of(results: dict[str, Any], paths: tuple[Path, ...]) -> dict[str, Any] | None:
    """The worst load of the measurements: max load average and max CPU of other processes."""
    loads = [x for x in (_get(results, p) for p in paths) if isinstance(x, dict)]
    if not loads:
        return None
    avg = [v for x in loads for v in x.get("loadavg_1m") or []]
    others = [x["others_cores"] for x in loads if x.get("others_cores") is not None]
    return {
        "loadavg_1m_max": max(avg) if avg else None,
        "others_cores_max": max(others) if others else None,
    }


def verdict(target: Target, value: float | None, load: dict[str, Any] | None) -> str:
    """The verdict of one target (see the module docstring)."""
    if value is None:
        return "n/a"
    if target.op == "report":
        return "reported"
    if target.met(value):
        return "met"
    others = (load or {}).get("others_cores_max")
    if target.wall_clock and others is not None and others >= LOADED_CORES:
        return f"not met under load (others used {others:.2f} cores)"
    return "NOT met"


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of a scenario that ran: value, met, verdict and the load it was measured
    under; the cost-model targets first."""
    out = []
    for t in sorted(TARGETS, key=lambda t: not t.cost):
        if t.scenario not in results:
            continue
        value = t.value(results)
        load = _load_of(results, t.loads)
        out.append(
            {
                "scenario": t.scenario,
                "target": t.label(),
                "value": value,
                "met": t.met(value),
                "verdict": verdict(t, value, load),
                "cost": t.cost,
                "load": load,
            }
        )
    return out


_LC = ("lifecycle",)
_REDIS_LOAD = ("lifecycle", "redis", "load")
_REP = ("replicas",)


def _replica_loads(k: str) -> tuple[Path, ...]:
    return (("replicas", "rounds", k, "load"), ("replicas", "pipelined_rounds", k, "load"))


def _peer_loads(kind: str) -> tuple[Path, ...]:
    w = ("peers", "workloads", kind)
    return ((*w, "rq", "run", "load"), (*w, "ours", "run", "load"))


TARGETS: tuple[Target, ...] = (
    # the cost model
    Target("lifecycle", "Redis CPU µs per task, lifecycle", (*_LC, "redis", "us_per_task_redis"), "<=", 20.0, (_REDIS_LOAD,), wall_clock=False, cost=True),
    Target("lifecycle", "RedisSwarmState / in-memory tasks/s", (*_LC, "redis_vs_memory"), ">=", 0.10, (_REDIS_LOAD, (*_LC, "memory", "load")), cost=True),
    Target("lifecycle", "RedisSwarmState / pipelined tasks/s, 1 process", (*_LC, "redis_vs_pipelined"), ">=", 1.5, (_REDIS_LOAD, (*_LC, "pipelined", "load")), cost=True),
    Target("replicas", "ours / pipelined tasks/s, 4 processes each", (*_REP, "vs_pipelined", "4"), ">=", 3.0, _replica_loads("4"), cost=True),
    Target("replicas", "ours / pipelined tasks/s, 2 processes each", (*_REP, "vs_pipelined", "2"), "report", None, _replica_loads("2"), cost=True),
    Target("replicas", "ours / pipelined tasks/s, 1 process each", (*_REP, "vs_pipelined", "1"), "report", None, _replica_loads("1"), cost=True),
    Target("peers", "ours / RQ tasks/s, plain jobs", ("peers", "run_ratio", "plain"), "report", None, _peer_loads("plain"), cost=True),
    Target("peers", "ours / RQ tasks/s, depends_on DAG fan-in 3", ("peers", "run_ratio", "dag"), "report", None, _peer_loads("dag"), cost=True),
    Target("memory", "Redis bytes per task", ("memory", "bytes_per_task"), "<=", 200.0, wall_clock=False, cost=True),
    Target("blocking", "max PING latency during large updates (ms)", ("blocking", "max_ms"), "<=", 25.0, (("blocking", "scenario_load"),), cost=True),
    Target("flatness", "apply 1,000 D: largest run / smallest run", ("flatness", "ratio"), "<=", 1.5, (("flatness", "scenario_load"),), cost=True),
    # the other checks
    Target("replicas", "4 replicas / 1 replica tasks/s", (*_REP, "ratio_4_vs_1"), ">=", 1.0, (("replicas", "rounds", "4", "load"), ("replicas", "rounds", "1", "load"))),
    Target("blocking", "max PING latency during big reads/queue calls/claims (ms)", ("blocking", "bounded_calls", "max_ms"), "<=", 25.0, (("blocking", "scenario_load"),)),
    Target("blocking", "BUSY replies during big reads/queue calls/claims", ("blocking", "bounded_calls", "busy"), "<=", 0.0),
    Target("blocking", "max PING during one completion with 500k children (ms)", ("blocking", "fanout", "max_ms"), "<=", 25.0, (("blocking", "scenario_load"),)),
    Target("blocking", "BUSY replies during that completion", ("blocking", "fanout", "busy"), "<=", 0.0),
    Target("redis_share", "Redis CPU / client CPU", ("redis_share", "ratio"), ">=", 1.0, wall_clock=False),
    Target("jobmon_tick", "jobmon tick: JobmonSwarmState / in-memory", ("jobmon_tick", "ratio"), "<=", 3.0, (("jobmon_tick", "scenario_load"),)),
)  # fmt: skip
