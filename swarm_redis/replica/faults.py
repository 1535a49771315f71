"""Which Redis errors a replica waits out: the same call may succeed a little later."""

from __future__ import annotations

import redis.exceptions as rexc

__all__ = ["is_transient"]


# Error codes Redis answers while it is busy, full, failing over or resharding: the same call
# can succeed a little later.
_TRANSIENT_CODES = frozenset(
    {
        "BUSY",
        "LOADING",
        "OOM",
        "READONLY",
        "TRYAGAIN",
        "MOVED",
        "ASK",
        "CLUSTERDOWN",
        "MASTERDOWN",
        "NOREPLICAS",
        "NOSCRIPT",  # a SCRIPT FLUSH between the transport's reload and its second try
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for an error after which the same call may succeed a little later.

    Connection errors and timeouts (a restart, a CLIENT KILL, a stall past ``socket_timeout``),
    BUSY (a long script), LOADING, OOM (``maxmemory`` with noeviction), READONLY (a replica
    promoted, or a client still on the old primary after a failover), TRYAGAIN/MOVED/ASK/
    CLUSTERDOWN/MASTERDOWN on a Cluster, NOSCRIPT (scripts flushed again right after the
    transport reloaded them: the script did not run). Not: wrong credentials or missing
    permissions (no amount of waiting fixes them), nor any error of swarm_redis itself.
    """
    if isinstance(exc, (rexc.AuthenticationError, rexc.AuthorizationError, rexc.NoPermissionError)):
        return False
    if isinstance(
        exc,
        (
            rexc.ConnectionError,
            rexc.TimeoutError,
            rexc.ClusterError,
            rexc.SlotNotCoveredError,
            rexc.OutOfMemoryError,
            rexc.ReadOnlyError,
            rexc.TryAgainError,
            rexc.AskError,
            rexc.NoScriptError,
            ConnectionError,
            TimeoutError,
        ),
    ):
        return True
    if isinstance(exc, rexc.ResponseError):
        code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
        return str(code).upper() in _TRANSIENT_CODES
    return False
