"""The demo's live view: a panel redrawn on a terminal, else one plain line per second.

The panel is the one ``swarm-redis watch`` shows (:func:`swarm_redis.ops.render.watch_view`: every
part on its own line, fitting 80 columns) with one more line for the demo's replica processes.
"""

from __future__ import annotations

import time
from collections import deque
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from swarm_redis.ops.reads import RunSnapshot
from swarm_redis.ops.render import watch_line, watch_view

__all__ = ["LiveView", "demo_panel"]


def demo_panel(
    snap: RunSnapshot, rate: float | None, *, alive: int, wanted: int, kills: int
) -> RenderableType:
    """The ``watch`` panel of one snapshot, then the demo's own line: processes and kills."""
    return Group(
        watch_view(snap, rate), Text(f"replica processes {alive}/{wanted} alive  kills {kills}")
    )


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
