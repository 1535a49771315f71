"""What a benchmark run measures and at which sizes: :class:`BenchConfig` and the suite's
constants (scenario order, run and array limits, replica counts)."""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass

from swarm_redis.testing.dags import DEFAULT_WIDTH

#: Scenario names, in the order they run (memory before flatness and blocking: they share runs).
SCENARIOS: tuple[str, ...] = (
    "lifecycle",
    "redis_share",
    "replicas",
    "peers",
    "memory",
    "flatness",
    "blocking",
    "jobmon_tick",
)
#: Workflow limit of benchmark runs: high enough never to hold a batch back.
RUN_LIMIT = 1_000_000_000
#: Limit of every array.
ARRAY_LIMIT = 1_000_000
REPLICA_COUNTS: tuple[int, ...] = (1, 2, 4)
#: Process start method of every child process of the suite (probes, replicas).
SPAWN = mp.get_context("spawn")


@dataclass
class BenchConfig:
    """What to run and at which sizes.

    Args:
        quick: 1/10 of the full sizes (memory, flatness and blocking on 100k-task runs).
        scale: Extra factor on every size (hidden option, for smoke tests).
        url: Redis URL; None: ``REDIS_URL``, else a private embedded server.
        only: Scenarios to run (default all).
        batch_size: Tasks per claim in lifecycle and replicas.
        naive_budget_s: Seconds the ``naive`` lifecycle may run before it is cut short.
        profile_dir: Write a pyinstrument profile of the lifecycle's Redis path here.
        breakdown: Also run the lifecycle's Redis path with per-operation Redis statistics.
        repeat: Run each lifecycle implementation (but naive) this often; keep the fastest.
    """

    quick: bool = False
    scale: float = 1.0
    url: str | None = None
    only: tuple[str, ...] = SCENARIOS
    batch_size: int = 500
    naive_budget_s: float | None = None
    profile_dir: str | None = None
    breakdown: bool = False
    repeat: int = 1

    def _n(self, full: int) -> int:
        factor = (0.1 if self.quick else 1.0) * self.scale
        return max(20, round(full * factor))

    @property
    def lifecycle_tasks(self) -> int:
        """Tasks of the lifecycle and replicas DAG."""
        return self._n(100_000)

    @property
    def flatness_sizes(self) -> tuple[int, ...]:
        """Run sizes of the flatness scenario (10k/100k/1M; quick: 10k/100k)."""
        small = max(20, round(10_000 * self.scale))
        if self.quick:
            return (small, small * 10)
        return (small, small * 10, small * 100)

    @property
    def big_tasks(self) -> int:
        """Tasks of the memory and blocking run (1M; quick: 100k)."""
        return self.flatness_sizes[-1]

    @property
    def blocking_update(self) -> int:
        """Changes in each of the large updates of the blocking scenario."""
        return max(10, self.big_tasks // 10)

    @property
    def update_size(self) -> int:
        """Changes in a flatness update (1,000, fewer when scaled down)."""
        return min(1000, self.flat_width)

    @property
    def flat_width(self) -> int:
        """Layer width of the flatness/memory/blocking runs (one shape for every size)."""
        return max(2, min(DEFAULT_WIDTH, self.flatness_sizes[0] // 10))

    def width_for(self, n: int) -> int:
        """Layer width of a lifecycle-sized DAG of ``n`` tasks."""
        return max(2, min(DEFAULT_WIDTH, n // 10))

    @property
    def naive_budget(self) -> float:
        """Seconds granted to the naive lifecycle."""
        if self.naive_budget_s is not None:
            return self.naive_budget_s
        return (3.0 if self.quick else 20.0) * min(1.0, self.scale)
