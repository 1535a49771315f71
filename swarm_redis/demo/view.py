"""The demo's live view: a panel redrawn on a terminal, else one plain line per second.

The panel puts each part on its own line (the run, the progress bar, the status counts, the
queue and replicas, the leader) and splits the numbers into two narrow tables, so that every
column header stays whole on an 80-column terminal.
"""

from __future__ import annotations

import time
from collections import deque
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from swarm_redis.constants import TASK_STATUSES
from swarm_redis.ops.reads import RunSnapshot
from swarm_redis.ops.render import run_status_name, watch_line

__all__ = ["BAR_WIDTH", "LiveView", "demo_panel"]

#: Widest progress bar, in columns (narrower on a narrower console).
BAR_WIDTH = 60


def _numbers(headers: list[str], values: list[str]) -> Table:
    """One header row and one row of right-aligned numbers, columns as wide as their text."""
    table = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 1))
    for header in headers:
        table.add_column(header, justify="right", no_wrap=True)
    table.add_row(*values)
    return table


def _progress(done: int, total: int) -> Table:
    """The bar and its percentage as one grid row (a bare ProgressBar ends without a newline)."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(max_width=BAR_WIDTH)
    grid.add_column(no_wrap=True)
    share = done / total if total else 0.0
    grid.add_row(ProgressBar(total=max(total, 1), completed=done), f"{share:.0%}")
    return grid


def demo_panel(
    snap: RunSnapshot, rate: float | None, *, alive: int, wanted: int, kills: int
) -> RenderableType:
    """The live panel of one snapshot: run line, bar, status counts, queue and replicas, leader."""
    speed = "-" if rate is None else f"{rate:.1f}/s"
    head = Text(
        f"run {snap.run_id}: {run_status_name(snap.run_status)}  {snap.done}/{snap.tasks} done "
        f"({snap.percent_done:.1f}%)  {speed}"
    )
    statuses = _numbers(list(TASK_STATUSES), [str(snap.counts[s]) for s in TASK_STATUSES])
    work = _numbers(
        ["ready", "claimed", "active/limit", "replicas", "leases", "kills"],
        [
            str(snap.ready),
            str(snap.claimed),
            f"{snap.active}/{snap.limit}",
            f"{alive}/{wanted}",
            str(snap.replicas_alive),
            str(kills),
        ],
    )
    lead = snap.leader
    if lead is not None and lead.replica_id:
        leader = Text(f"leader: {lead.replica_id}  epoch {lead.epoch}")
    else:
        leader = Text("leader: none")
    return Group(head, _progress(snap.done, snap.tasks), statuses, work, leader)


class LiveView:
    """Progress while the demo runs: rich Live on a terminal, else one plain line per second."""

    def __init__(self, out: IO[str], *, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._live: Live | None = None
        self._samples: deque[tuple[float, int]] = deque(maxlen=8)
        self._last_line = 0.0

    def __enter__(self) -> LiveView:
        if self.tty:
            self._live = Live(
                Text("starting ..."),
                console=Console(file=self.out),
                refresh_per_second=4,
                transient=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display (idempotent)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def rate(self, now: float, finished: int) -> float | None:
        """Completions per second over the last few seconds."""
        self._samples.append((now, finished))
        t0, f0 = self._samples[0]
        if now - t0 < 0.5:
            return None
        return (finished - f0) / (now - t0)

    def update(self, snap: RunSnapshot, *, alive: int, wanted: int, kills: int) -> None:
        """Show one snapshot (rate-limited to a line per second without a terminal)."""
        now = time.monotonic()
        rate = self.rate(now, snap.counts["D"] + snap.counts["F"])
        if self._live is not None:
            panel = demo_panel(snap, rate, alive=alive, wanted=wanted, kills=kills)
            self._live.update(panel, refresh=False)
            return
        if now - self._last_line >= 1.0:
            self._last_line = now
            lead = snap.leader
            leader = f"{lead.replica_id} epoch {lead.epoch}" if lead and lead.replica_id else "none"
            line = (
                f"{watch_line(snap, rate)} replicas={alive}/{wanted} leader={leader} kills={kills}"
            )
            print(line, file=self.out, flush=True)
