"""The reference replica: the loop (``loop``), which Redis errors it waits out (``faults``), the
gateway it drives (the workflow server's calls) and its process (``python -m swarm_redis.replica``).
"""
