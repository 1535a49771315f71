"""``python -m swarm_redis``: the ``swarm-redis`` command line."""

from swarm_redis.ops.cli import main

raise SystemExit(main())
