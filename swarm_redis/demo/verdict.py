"""The demo's verdict: checked from Redis, the simulated server's record and the checker."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarm_redis.demo.sim import SimReport
from swarm_redis.engine.keys import RunKeys
from swarm_redis.ops.reads import RunSnapshot
from swarm_redis.ops.verify import find_drift

__all__ = [
    "DemoResult",
    "blocked_by_failures",
    "fill_drift",
    "fill_from_report",
    "fill_from_snapshot",
    "verdict_text",
]


def blocked_by_failures(
    upstreams: Mapping[int, Sequence[int]], statuses: Mapping[int, str]
) -> set[int]:
    """Tasks that can never run: not final, with an ERROR_FATAL task among their ancestors.

    jobmon never runs the downstreams of a task that failed for good; such a run ends in ERROR
    with these tasks still REGISTERING.
    """
    children: dict[int, list[int]] = {}
    for child, parents in upstreams.items():
        for parent in parents:
            children.setdefault(int(parent), []).append(int(child))
    seen: set[int] = set()
    stack = [t for t, status in statuses.items() if status == "F"]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return {t for t in seen if statuses.get(t) not in ("D", "F")}


@dataclass
class DemoResult:
    """The demo's outcome; :meth:`to_json` is the ``--json`` line."""

    backend: str
    run: int
    prefix: str
    shape: str
    replicas: int
    limit: int
    fail_rate: float
    tasks: int = 0
    done: int = 0
    failed: int = 0
    blocked: int = 0
    claimed: int = 0
    run_status: str = ""
    duplicate_queues: int = 0
    limit_violations: int = 0
    sim_problems: list[str] = field(default_factory=list)
    server_disagrees: int = 0
    drift: int = 0
    drift_kinds: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    replica_crashes: int = 0
    queue_calls: int = 0
    attempts: int = 0
    max_active: int = 0
    leader_epoch: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    interrupted: bool = False
    error: str = ""

    @property
    def throughput(self) -> float:
        """Final tasks per second of wall time."""
        return round((self.done + self.failed) / self.seconds, 1) if self.seconds > 0 else 0.0

    @property
    def checks(self) -> dict[str, bool]:
        """Each verdict check and whether it passed."""
        return {
            "all_tasks_final": self.tasks > 0
            and self.done + self.failed + self.blocked == self.tasks
            and self.claimed == 0,
            "run_finalized": self.run_status == self.expected_run_status,
            "no_duplicate_queues": self.duplicate_queues == 0,
            "limits_respected": self.limit_violations == 0,
            "server_checks": not self.sim_problems,
            "server_agrees": self.server_disagrees == 0,
            "verify_clean": self.drift == 0,
            "no_replica_crash": self.replica_crashes == 0,
            "finished_in_time": not (self.timed_out or self.interrupted or self.error),
        }

    @property
    def expected_run_status(self) -> str:
        """DONE when every task is done, else ERROR (as jobmon's orchestrator ends)."""
        return "D" if self.tasks > 0 and self.done == self.tasks else "E"

    @property
    def ok(self) -> bool:
        return all(self.checks.values())

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(throughput=self.throughput, checks=self.checks, ok=self.ok)
        return out


def verdict_text(result: DemoResult) -> str:
    if result.error:
        return f"\nverdict: ERROR after {result.seconds:.1f} s: {result.error}"
    if result.interrupted:
        return (
            f"\nverdict: INTERRUPTED after {result.seconds:.1f} s: {result.done} done + "
            f"{result.failed} failed of {result.tasks}, {result.kills} replicas killed; "
            "nothing was checked"
        )
    mark = {True: "ok  ", False: "FAIL"}
    c = result.checks
    blocked = f" + {result.blocked} blocked by a failed upstream" if result.blocked else ""
    lines = [
        "",
        f"verdict: {'PASSED' if result.ok else 'FAILED'}  ({result.backend}"
        + (f", {result.replicas} replicas, {result.kills} killed)" if result.replicas else ")"),
        f"  {mark[c['all_tasks_final']]} all tasks final: {result.done} done + "
        f"{result.failed} failed{blocked} of {result.tasks} ({result.claimed} still claimed)",
        f"  {mark[c['run_finalized']]} run finalized: status {result.run_status or '-'} "
        f"(expected {result.expected_run_status})",
        f"  {mark[c['no_duplicate_queues']]} no task queued twice for one attempt: "
        f"{result.duplicate_queues} duplicates in {result.queue_calls} queue calls",
        f"  {mark[c['limits_respected']]} limits never exceeded: "
        f"{result.limit_violations} violations (max active {result.max_active}/{result.limit})",
        f"  {mark[c['server_checks']]} server's other checks: "
        + ("; ".join(result.sim_problems) or "none failed"),
        f"  {mark[c['server_agrees']]} Redis agrees with the server: "
        f"{result.server_disagrees} tasks differ",
        f"  {mark[c['verify_clean']]} verify clean: {result.drift} drift"
        + (f" {result.drift_kinds}" if result.drift_kinds else ""),
        f"  {mark[c['no_replica_crash']]} no replica crashed: {result.replica_crashes}",
        f"  {mark[c['finished_in_time']]} finished: "
        + ("timed out" if result.timed_out else "interrupted" if result.interrupted else "yes"),
        f"  wall time {result.seconds:.1f} s, throughput {result.throughput} tasks/s, "
        f"{result.attempts} attempts, leader epoch {result.leader_epoch}",
    ]
    return "\n".join(lines)


def fill_from_snapshot(result: DemoResult, snap: RunSnapshot) -> None:
    result.tasks = snap.tasks
    result.done = snap.counts["D"]
    result.failed = snap.counts["F"]
    result.claimed = snap.claimed
    result.run_status = snap.run_status
    result.leader_epoch = snap.leader.epoch if snap.leader is not None else result.leader_epoch


def fill_from_report(
    result: DemoResult,
    report: SimReport,
    client: Any,
    keys: RunKeys,
    upstreams: Mapping[int, Sequence[int]],
) -> None:
    result.duplicate_queues = len(report.duplicates)
    result.limit_violations = len(report.limit_violations)
    result.sim_problems = _other_problems(report)
    result.queue_calls = report.queue_calls
    result.attempts = report.attempts_started
    result.max_active = report.max_active
    # The server's final statuses against Redis: every final task must agree.
    redis_final: dict[int, str] = {}
    for status in ("D", "F"):
        for member in client.sscan_iter(keys.status_set(status), count=2000):
            redis_final[int(member)] = status
    server_final = {t: s for t, s in report.statuses.items() if s in ("D", "F")}
    result.server_disagrees = len(
        {t for t, s in server_final.items() if redis_final.get(t) != s}
        | {t for t, s in redis_final.items() if server_final.get(t) != s}
    )
    statuses = {t: redis_final.get(t, "G") for t in report.statuses}
    result.blocked = len(blocked_by_failures(upstreams, statuses))


def _other_problems(report: SimReport) -> list[str]:
    """The server's checks other than duplicates and limits, one line per failed check."""
    out = []
    if report.overlaps:
        out.append(f"{len(report.overlaps)} ids in two queue calls at once")
    if report.dependency_violations:
        out.append(f"{len(report.dependency_violations)} tasks queued before an upstream was done")
    if report.wrong_array:
        out.append(f"{len(report.wrong_array)} tasks queued under another array")
    if report.unknown_ids:
        out.append(f"{report.unknown_ids} unknown task ids queued")
    return out


def fill_drift(result: DemoResult, client: Any, keys: RunKeys) -> None:
    report = find_drift(client, keys)
    result.drift = report.total
    result.drift_kinds = report.counts
