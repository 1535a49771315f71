"""``swarm-redis bench``: argument parsing and the entry point of the benchmark suite.

Wire it into a parent CLI with :func:`add_bench_parser` (sets ``func`` to :func:`run_args`), or
call :func:`main` with an argv list.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from swarm_redis.bench.report import evaluate_targets, render, to_markdown, write_json
from swarm_redis.bench.scenarios import SCENARIOS, BenchConfig, run_suite
from swarm_redis.replica.process import batch_size_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bench options to ``parser``."""
    parser.add_argument(
        "--quick", action="store_true", help="1/10 sizes (about a minute on 2 cores)"
    )
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown to FILE")
    parser.add_argument(
        "--url", help="Redis URL (default: REDIS_URL, else a private embedded redis-server)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, metavar="SCENARIO",
        help=f"run only these scenarios ({', '.join(SCENARIOS)})",
    )  # fmt: skip
    parser.add_argument(
        "--profile", metavar="DIR",
        help="also profile the lifecycle's Redis path with pyinstrument into DIR",
    )  # fmt: skip
    parser.add_argument(
        "--breakdown", action="store_true",
        help="also print the Redis commands of every operation of the lifecycle's Redis "
        "implementations (the per-operation CPU table is always printed)",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N",
        help="run each lifecycle implementation N times and keep the fastest (noisy machines)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=batch_size_arg, default=500, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--naive-budget", type=float, default=None, help=argparse.SUPPRESS)


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on an ``add_subparsers()`` object; its ``func`` is :func:`run_args`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="benchmark suite: " + ", ".join(SCENARIOS),
        description="Benchmark RedisSwarmState against the in-memory state, Lua-less Redis "
        "implementations and RQ; print one table per scenario and the targets.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run_args)
    return parser


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The BenchConfig the parsed options describe."""
    if args.scale <= 0:
        raise SystemExit("--scale must be > 0")
    return BenchConfig(
        quick=args.quick,
        scale=args.scale,
        url=args.url,
        only=tuple(args.only) if args.only else SCENARIOS,
        batch_size=args.batch_size,
        naive_budget_s=args.naive_budget,
        profile_dir=args.profile,
        breakdown=args.breakdown,
        repeat=max(1, args.repeat),
    )


def run_args(args: argparse.Namespace, console: Console | None = None) -> int:
    """Run the suite for parsed options; 0 (targets are reported, never turned into failures)."""
    con = console or Console(width=None if sys.stdout.isatty() else 150)
    config = config_from_args(args)
    results = run_suite(config, progress=lambda msg: con.print(f"[dim]{msg}[/]"))
    render(results, con)
    if args.json:
        write_json(results, args.json)
        con.print(f"[dim]figures written to {args.json}[/]")
    if args.markdown:
        Path(args.markdown).write_text(to_markdown(results), encoding="utf-8")
    missed = [t for t in evaluate_targets(results) if t["met"] is False]
    if missed:
        loaded = sum(1 for t in missed if t["verdict"].startswith("not met under load"))
        note = f", {loaded} of them measured under load" if loaded else ""
        con.print(f"{len(missed)} target(s) not met{note} (see docs/benchmarks.md)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``swarm-redis bench [--quick] [--json FILE] [--url URL] [--only SCENARIO...]``."""
    parser = argparse.ArgumentParser(prog="swarm-redis bench", description=__doc__)
    add_arguments(parser)
    return run_args(parser.parse_args(argv))
