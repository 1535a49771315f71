"""``python -m swarm_redis.demo.sim``: the simulated server process (config on stdin)."""

from swarm_redis.demo.sim.server import child_main

child_main()
