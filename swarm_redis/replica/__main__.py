"""``python -m swarm_redis.replica``: one reference replica process."""

from swarm_redis.replica.process import main

raise SystemExit(main())
