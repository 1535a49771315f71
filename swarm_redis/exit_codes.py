"""Exit statuses of every command this package installs: ``swarm-redis``, the demo, a replica.

One table, so a script can tell the same failure apart the same way whichever command it ran.
"""

EXIT_OK = 0
#: an unexpected error, or the demo's verdict is FAILED
EXIT_ERROR = 1
EXIT_FAILED = EXIT_ERROR
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
#: ``verify`` found drift
EXIT_DRIFT = 4
EXIT_CONNECTION = 5
#: Redis refused a write (read-only replica, ACL, OOM)
EXIT_WRITE_REFUSED = 6
#: Redis lost the run's writes (StateLostError): rebuild the run, then start the replicas again
EXIT_STATE_LOST = 7
#: 128 + SIGINT, 128 + SIGTERM, as shells report them
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
