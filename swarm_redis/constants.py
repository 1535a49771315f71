"""Status alphabets of jobmon tasks and workflow runs, and the sets the state reasons with.

Task statuses and workflow-run statuses share letters with different meanings ('E' is
ERROR_RECOVERABLE for a task and ERROR for a run), so they are kept in separate names.
"""

from __future__ import annotations

# Task statuses (jobmon TaskStatus).
REGISTERING = "G"
QUEUED = "Q"
INSTANTIATING = "I"
LAUNCHED = "O"
RUNNING = "R"
DONE = "D"
ERROR_RECOVERABLE = "E"
ADJUSTING_RESOURCES = "A"
ERROR_FATAL = "F"

#: Every task status, in the order used for keys and reports.
TASK_STATUSES: tuple[str, ...] = ("G", "Q", "I", "O", "R", "D", "E", "A", "F")
#: The buckets jobmon's in-memory SwarmState keeps ('E' has none there).
SEED_TRACKED_STATUSES: tuple[str, ...] = ("G", "Q", "I", "O", "R", "D", "A", "F")
#: In flight on the cluster: these count against the concurrency limits.
ACTIVE_TASK_STATUSES: tuple[str, ...] = ("Q", "I", "O", "R")
#: Final within a run: a resume is a new workflow run in jobmon.
FINAL_TASK_STATUSES: frozenset[str] = frozenset({"D", "F"})
#: Work that keeps a run alive besides the ready queue and claims.
PENDING_TASK_STATUSES: tuple[str, ...] = ("Q", "I", "O", "R", "E", "A")

TASK_STATUS_NAMES: dict[str, str] = {
    "G": "REGISTERING",
    "Q": "QUEUED",
    "I": "INSTANTIATING",
    "O": "LAUNCHED",
    "R": "RUNNING",
    "D": "DONE",
    "E": "ERROR_RECOVERABLE",
    "A": "ADJUSTING_RESOURCES",
    "F": "ERROR_FATAL",
}

# Workflow-run statuses (jobmon WorkflowRunStatus).
WORKFLOW_RUN_STATUSES: tuple[str, ...] = (
    "G",
    "L",
    "B",
    "I",
    "O",
    "R",
    "D",
    "A",
    "S",
    "E",
    "C",
    "H",
    "T",
)
WORKFLOW_RUN_STATUS_NAMES: dict[str, str] = {
    "G": "REGISTERED",
    "L": "LINKING",
    "B": "BOUND",
    "I": "INSTANTIATED",
    "O": "LAUNCHED",
    "R": "RUNNING",
    "D": "DONE",
    "A": "ABORTED",
    "S": "STOPPED",
    "E": "ERROR",
    "C": "COLD_RESUME",
    "H": "HOT_RESUME",
    "T": "TERMINATED",
}
#: The server stopped the run: the orchestrator exits without finalizing.
SERVER_STOP_STATUSES: frozenset[str] = frozenset({"E", "T", "S"})
#: "Resume requested, drain and exit" signals.
TERMINATING_STATUSES: tuple[str, ...] = ("C", "H")
#: Terminal run statuses: no transition leaves them.
TERMINAL_RUN_STATUSES: frozenset[str] = frozenset({"D", "E", "S", "T", "A"})
#: Statuses before the run starts; they may move to any later status.
PRE_RUN_STATUSES: tuple[str, ...] = ("G", "L", "B", "I", "O")


def run_transition_allowed(current: str, new: str) -> bool:
    """Whether the workflow-run state machine lets ``current`` move to ``new``.

    B -> R -> C/H/D/E/S, C/H -> T; terminal states are absorbing; a repeat is allowed (no-op).
    Pre-run statuses (G L B I O) may move to any status except an earlier pre-run one: the
    machine only has to stop a run that started from being rewound or revived.
    """
    if current == new:
        return True
    if current in TERMINAL_RUN_STATUSES:
        return False
    if current in PRE_RUN_STATUSES:
        if new in PRE_RUN_STATUSES:
            return PRE_RUN_STATUSES.index(new) > PRE_RUN_STATUSES.index(current)
        return True
    if current == "R":
        return new in ("C", "H", "D", "E", "S")
    if current in TERMINATING_STATUSES:
        return new in ("T", "E")
    return False
