"""``python -m swarm_redis.replica``: one reference replica process."""

from swarm_redis.replica.loop import main

raise SystemExit(main())
