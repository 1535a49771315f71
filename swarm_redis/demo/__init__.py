"""The demo: a simulated jobmon server, replica processes, the live view and the verdict.

``cli`` (``swarm-redis demo``, ``python -m swarm_redis.demo``) parses the options; ``run`` drives
one demo; ``dag`` builds and registers its workflow; ``pool`` starts and kills the replica
processes; ``view`` shows the progress; ``verdict`` checks the outcome; ``sim`` is the simulated
server; ``embedded`` starts a private Redis when none is given.
"""
