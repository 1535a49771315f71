"""``python -m swarm_redis.bench``: the same as ``swarm-redis bench``."""

import sys

from swarm_redis.bench import run

if __name__ == "__main__":
    sys.exit(run())
