"""``python -m swarm_redis.replica``: one replica process against the simulated server.

It attaches to the run (waiting out a Redis that is starting or failing over), runs
:func:`~swarm_redis.replica.loop.run_replica` until the run is final, and leaves the run
cleanly on SIGTERM. Exit statuses: :func:`main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from swarm_redis.engine.coordination import MAX_CLAIM_SIZE
from swarm_redis.errors import UnknownRunError
from swarm_redis.exit_codes import EXIT_NOT_FOUND, EXIT_OK, EXIT_STATE_LOST
from swarm_redis.replica.faults import is_transient
from swarm_redis.replica.loop import run_replica
from swarm_redis.state import RedisSwarmState

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m swarm_redis.replica",
        description="Run one replica of a workflow run shared through Redis, against the "
        "simulated server.",
    )
    p.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--prefix", default="swarm", help="key prefix of the run")
    p.add_argument("--run", type=int, required=True, help="workflow run id")
    p.add_argument("--sim", required=True, help="HOST:PORT of the simulated server")
    p.add_argument(
        "--sim-key", default=None, help="its authkey in hex (default: $SWARM_SIM_AUTHKEY)"
    )
    p.add_argument("--replica-id", default=None, help="replica name (default host-pid-random)")
    p.add_argument("--ttl", type=float, default=10.0, help="lease length in seconds")
    p.add_argument("--batch-size", type=batch_size_arg, default=500, help=BATCH_SIZE_HELP)
    p.add_argument("--poll", type=float, default=0.05, help="idle pause and sync period (s)")
    p.add_argument("--full-sync", type=float, default=60.0, help="full status fetch period (s)")
    p.add_argument("--reconcile", type=float, default=30.0, help="reconcile period (s)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    return p


#: The --batch-size help of the replica commands.
BATCH_SIZE_HELP = f"most tasks per claim (1..{MAX_CLAIM_SIZE})"


def batch_size_arg(text: str) -> int:
    """argparse type of --batch-size: an int in 1..MAX_CLAIM_SIZE (claim_batch's bound)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 1 <= n <= MAX_CLAIM_SIZE:
        raise argparse.ArgumentTypeError(f"must be in 1..{MAX_CLAIM_SIZE}, got {n}")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m swarm_redis.replica``; SIGTERM leaves the run cleanly.

    Exit status: :data:`EXIT_OK` (0) once the run is final or after SIGTERM,
    :data:`EXIT_STATE_LOST` (7) when Redis lost the run's writes, :data:`EXIT_NOT_FOUND` (3)
    when the run is not in Redis when the replica attaches, 1 on an unexpected error, 2 on bad
    usage. Transient Redis errors (see :func:`is_transient`) never end it.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s replica[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    # the loop itself does not depend on the simulator: imported here, for the process only
    from swarm_redis.demo.sim.client import SimClient

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    # No automatic retry in the client: a claim re-sent by redis-py after a timeout could claim a
    # second batch while the first stays held. The loop retries itself, and after a failed claim
    # it leaves and re-joins, which gives back whatever that claim may have taken.
    client = redis.Redis.from_url(args.url, protocol=3, retry=Retry(NoBackoff(), 0))
    try:
        try:
            state = _attach(client, args.run, args.prefix, stop)
        except UnknownRunError as e:
            # nothing to join (never created, or gone before this replica attached)
            print(f"replica: {e.args[0] if e.args else e}", file=sys.stderr, flush=True)
            return EXIT_NOT_FOUND
        if state is None:
            return EXIT_OK  # stopped before Redis answered
        with SimClient(args.sim, args.sim_key) as gateway:
            result = run_replica(
                state,
                gateway,
                ttl_s=args.ttl,
                batch_size=args.batch_size,
                poll_s=args.poll,
                stop=stop,
                full_sync_s=args.full_sync,
                reconcile_s=args.reconcile,
                replica_id=args.replica_id,
            )
    finally:
        client.close()
    if args.json:
        print(json.dumps(dataclasses.asdict(result)), flush=True)
    if result.reason == "state_lost":
        print(f"replica: {result.error}", file=sys.stderr, flush=True)
        return EXIT_STATE_LOST
    return EXIT_OK


def _attach(client: Any, run: int, prefix: str, stop: threading.Event) -> RedisSwarmState | None:
    """Attach to the run, waiting out transient errors (Redis starting, failing over)."""
    delay = 0.1
    while True:
        try:
            return RedisSwarmState.attach(client, run, prefix=prefix)
        except Exception as e:
            if not is_transient(e):
                raise
            logger.warning(
                "attach to run %s: %s: %s; retrying in %.1f s", run, type(e).__name__, e, delay
            )
        if stop.wait(delay):
            return None
        delay = min(2.0, delay * 2)
