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
#: Redis refused a command with NOPERM (ACL): a write, or a read outside the user's key
#: pattern; the message says which
EXIT_WRITE_REFUSED = 6
#: Redis lost the run's writes (StateLostError): rebuild the run, then start the replicas again
EXIT_STATE_LOST = 7
#: 128 + SIGINT, 128 + SIGTERM, as shells report them
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
#: 128 + SIGPIPE: the reader of stdout went away (``swarm-redis events | head``). The command
#: stops quietly, as ``cat``, ``seq`` or ``git log`` do when SIGPIPE ends them; only a shell
#: with ``set -o pipefail`` sees the status, and then the same one those tools give
EXIT_PIPE_CLOSED = 141
