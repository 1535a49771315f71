"""Human renderings of the CLI's views: rich tables and plain lines, no I/O.

Each function turns what :mod:`swarm_redis.ops.reads`, :mod:`swarm_redis.ops.tasks` or
:mod:`swarm_redis.ops.verify` read into a rich renderable; the CLI prints it on a console that
shows colour only on a terminal. Every view fits an 80-column terminal: table cells wrap (fold)
instead of being cut, and no header is wider than its column needs. The live view of ``watch``
(:func:`watch_view`) is also what the demo shows.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from swarm_redis.constants import (
    TASK_STATUS_NAMES,
    TASK_STATUSES,
)
from swarm_redis.engine.coordination import ReapReport
from swarm_redis.ops.reads import RunSnapshot, RunSummary, run_status_name
from swarm_redis.ops.tasks import TaskDetail
from swarm_redis.ops.verify import DRIFT_KINDS, DriftReport

__all__ = [
    "drift_view",
    "reap_summary",
    "replicas_view",
    "run_status_name",
    "runs_table",
    "status_view",
    "task_view",
    "tasks_table",
    "watch_line",
    "watch_view",
]


def _secs(ms: int | None) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.1f}s"


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return f"{t:%Y-%m-%d %H:%M:%S} UTC"


def _age(ms: int | None) -> str:
    """A duration in the largest unit that keeps it short: ``45s``, ``12m``, ``3h05m``, ``2d``."""
    if ms is None or ms < 0:
        return "-"
    secs = ms // 1000
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    if secs < 172800:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"{secs // 86400}d"


def _batches(n: int) -> str:
    return f"{n} batch" if n == 1 else f"{n} batches"


def _table(*columns: str) -> Table:
    """A borderless table; cells fold (wrap inside a word) rather than being cut with "…"."""
    table = Table(show_edge=False, pad_edge=False)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", overflow="fold")
    return table


def _titled(title: str, table: Table) -> RenderableType:
    """A table under a title line (a rich table title would wrap to the table's width)."""
    return Group(Text(f"{title}:"), table)


def runs_table(runs: Sequence[RunSummary]) -> RenderableType:
    if not runs:
        return Text("no runs found")
    table = _table("run", "status", "tasks", "done", "failed", "claimed", "% done")
    table.columns[1].justify = "left"
    for r in runs:
        table.add_row(
            r.run_id,
            run_status_name(r.status),
            str(r.tasks),
            str(r.done),
            str(r.failed),
            str(r.claimed),
            f"{r.percent_done:.1f}",
        )
    return table


def _limits(s: RunSnapshot) -> RenderableType:
    table = _table("scope", "active", "reserved", "limit", "free")
    free = max(0, s.limit - s.active - s.reserved)
    table.add_row("workflow", str(s.active), str(s.reserved), str(s.limit), str(free))
    for a in s.arrays:
        limit = "-" if a.limit is None else str(a.limit)
        a_free = "-" if a.limit is None else str(max(0, a.limit - a.active - a.reserved))
        table.add_row(f"array {a.array_id}", str(a.active), str(a.reserved), limit, a_free)
    return _titled("limits", table)


def _replicas(s: RunSnapshot) -> RenderableType:
    """One row per replica: lease left, age (time since it joined), batches and tasks held."""
    if not s.replicas:
        return Text("replicas: none registered")
    table = _table("replica", "alive", "lease", "age", "batches", "claimed")
    for r in s.replicas:
        table.add_row(
            r.replica_id,
            "yes" if r.alive else "NO",
            _secs(r.lease_left_ms),
            _age(None if r.joined_ms is None else s.now_ms - r.joined_ms),
            str(r.batches),
            str(r.claimed),
        )
    return _titled("replicas", table)


def _leader_line(s: RunSnapshot) -> Text:
    lead = s.leader
    if lead is None:
        return Text("leader: none")
    if not lead.replica_id:  # resigned or cleared: the epoch stays for the next takeover
        return Text(f"leader: none (last epoch {lead.epoch})")
    state = "lease valid" if lead.alive else "LEASE EXPIRED"
    return Text(
        f"leader: {lead.replica_id}  epoch {lead.epoch}  {state}, {_secs(lead.lease_left_ms)} left"
    )


def status_view(s: RunSnapshot) -> RenderableType:
    head = Text(
        f"run {s.run_id} (prefix {s.prefix}): {run_status_name(s.run_status)}  "
        f"{s.done}/{s.tasks} done ({s.percent_done:.1f}%)  version {s.version}\n"
        f"last sync: {s.last_sync or '-'}"
    )
    counts = _table("status", "name", "tasks")
    counts.columns[1].justify = "left"
    for status in TASK_STATUSES:
        counts.add_row(status, TASK_STATUS_NAMES[status], str(s.counts[status]))
    counts.add_row("", "total", str(s.tasks))
    queue = Text(
        f"ready queue: {s.ready} (queued set {s.queued})   events kept: {s.events}\n"
        f"claimed: {s.claimed} in {_batches(s.batches)} ({s.orphans} orphaned)"
    )
    parts: list[RenderableType] = [
        head,
        _titled("tasks", counts),
        queue,
        _limits(s),
        _replicas(s),
        _leader_line(s),
    ]
    if s.counters:
        parts.append(Text("counters: " + "  ".join(f"{k}={v}" for k, v in s.counters.items())))
    return Group(*parts)


def replicas_view(s: RunSnapshot) -> RenderableType:
    return Group(_replicas(s), _leader_line(s))


def tasks_table(rows: Sequence[dict[str, Any]], total: int | None) -> RenderableType:
    if not rows:
        return Text("no tasks match")
    table = _table("task", "status", "done/upstreams", "array", "propagated", "downstream")
    table.columns[1].justify = "left"
    for r in rows:
        table.add_row(
            str(r["task_id"]),
            f"{r['status']} {TASK_STATUS_NAMES.get(r['status'], '?')}",
            f"{r['done']}/{r['upstreams']}",
            str(r["array_id"]),
            "yes" if r["propagated"] else "",
            str(len(r["downstream"])),
        )
    shown = f"{len(rows)} shown" + (f" of {total}" if total is not None else "")
    return Group(table, Text(shown))


def _neighbours(title: str, items: Sequence[dict[str, Any]]) -> RenderableType:
    if not items:
        return Text(f"{title}: none")
    table = _table("task", "status", "done/upstreams")
    table.columns[1].justify = "left"
    for u in items:
        status = u.get("status")
        if status is None:
            table.add_row(str(u["task_id"]), "(no record)", "")
        else:
            name = TASK_STATUS_NAMES.get(status, "?")
            table.add_row(str(u["task_id"]), f"{status} {name}", f"{u['done']}/{u['upstreams']}")
    return _titled(title, table)


def task_view(d: TaskDetail) -> RenderableType:
    t = d.task
    lines = [
        f"task {t['task_id']}: {t['status']} {TASK_STATUS_NAMES.get(t['status'], '?')}"
        f"  array {t['array_id']}",
        f"upstreams done {t['done']}/{t['upstreams']} (start {t['start']})"
        f"  propagated: {'yes' if t['propagated'] else 'no'}",
    ]
    if d.queue_position is not None:
        lines.append(f"queued: position {d.queue_position} of {d.queue_length}")
    else:
        lines.append("queued: no")
    if d.claim_batch is not None:
        alive = {True: "alive", False: "lease expired", None: "unknown"}[d.claim_replica_alive]
        lines.append(f"claimed: batch {d.claim_batch} by replica {d.claim_replica} ({alive})")
    else:
        lines.append("claimed: no")
    limit = "-" if d.array_limit is None else str(d.array_limit)
    lines.append(
        f"capacity (active + reserved of limit): workflow {d.run_active} + {d.run_reserved}"
        f" of {d.run_limit}, array {d.array_active} + {d.array_reserved} of {limit}"
    )
    return Group(
        Text("\n".join(lines)),
        _neighbours(f"upstream tasks (found by scanning {d.scanned_records} records)", d.upstream),
        _neighbours("downstream tasks", d.downstream),
        Text(f"why not running: {d.verdict}"),
    )


def drift_view(report: DriftReport, examples: int = 3) -> RenderableType:
    read = "one atomic snapshot" if report.consistent else "scans (a live run may look drifted)"
    head = Text(f"run {report.run_id}: {report.tasks} tasks checked, read as {read}")
    parts: list[RenderableType] = [head]
    if report.repaired or report.skipped:
        fixed = ", ".join(f"{k}={v}" for k, v in sorted(report.repaired.items())) or "nothing"
        parts.append(
            Text(f"repaired: {fixed}; skipped (changed since read, or no-op): {report.skipped}")
        )
    if report.clean:
        parts.append(Text("no drift"))
    else:
        table = _table("kind", "count", "meaning", "examples")
        for col in table.columns[2:]:
            col.justify = "left"
        for kind, items in report.examples(examples).items():
            shown = "; ".join(
                d.subject
                + (f" {d.observed}" if d.observed else "")
                + (f" -> {d.expected}" if d.expected else "")
                for d in items
            )
            table.add_row(kind, str(report.counts[kind]), DRIFT_KINDS[kind][0], shown)
        parts.append(_titled("drift", table))
    info = "  ".join(f"{k}={v}" for k, v in report.info.items())
    parts.append(Text(f"not drift, for information: {info}"))
    return Group(*parts)


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1f}/s"


def watch_line(s: RunSnapshot, rate: float | None) -> str:
    """One plain line per refresh (for a non-terminal stdout)."""
    counts = " ".join(f"{st}={s.counts[st]}" for st in TASK_STATUSES if s.counts[st])
    return (
        f"{_when(s.now_ms)} run {s.run_id} {s.run_status} {s.done}/{s.tasks} done "
        f"({s.percent_done:.1f}%) {counts} ready={s.ready} claimed={s.claimed} "
        f"active={s.active}/{s.limit} rate={_rate(rate)}"
    )


def watch_view(s: RunSnapshot, rate: float | None) -> RenderableType:
    """The live view: a head line, the progress bar on a line of its own, the per-status counts
    (one column per status), then queue, claims and capacity, and the leader.

    The widest part is the counts table: nine columns of at most seven digits fit 80 columns.
    """
    head = Text(
        f"run {s.run_id}: {run_status_name(s.run_status)}  {s.done}/{s.tasks} done "
        f"({s.percent_done:.1f}%)  {_rate(rate)}"
    )
    bar = Table.grid(padding=(0, 1))
    bar.add_column(width=50)
    bar.add_column()
    bar.add_row(ProgressBar(total=max(s.tasks, 1), completed=s.done), f"{s.percent_done:.0f}%")
    counts = Table(show_edge=False, pad_edge=False, box=None, show_header=True)
    for st in TASK_STATUSES:
        counts.add_column(st, justify="right", overflow="fold")
    counts.add_row(*(str(s.counts[st]) for st in TASK_STATUSES))
    flow = Text(
        f"ready {s.ready}  claimed {s.claimed} ({_batches(s.batches)})  "
        f"active {s.active}/{s.limit}  replicas alive {s.replicas_alive}"
    )
    return Group(head, bar, counts, flow, _leader_line(s))


def reap_summary(run_id: str, report: ReapReport) -> str:
    """What one ``reap`` did, in a sentence."""
    if report.skipped:
        return (
            f"reap of run {run_id}: skipped, another reap ran a moment ago "
            "(the reap mutex is held); try again shortly"
        )
    if not report.dead_replicas:
        return f"reap of run {run_id}: nothing to do, no replica lease has expired"
    n = len(report.dead_replicas)
    names = ", ".join(report.dead_replicas[:5]) + (" ..." if n > 5 else "")
    text = (
        f"reap of run {run_id}: {n} dead replica{'s' if n != 1 else ''} removed ({names}); "
        f"{report.batches} claimed batch{'es' if report.batches != 1 else ''} "
        f"({report.tasks} task{'s' if report.tasks != 1 else ''}) orphaned, to be re-driven by "
        "the next claim of a live replica"
    )
    if report.leader_cleared:
        text += "; the dead leader's lease was cleared"
    return text
