"""``python -m swarm_redis.demo``: the demo without the rest of the CLI."""

from swarm_redis.demo.cli import main

raise SystemExit(main())
