"""swarm_redis tests that need jobmon's own fixtures (a real jobmon server on sqlite).

This file lives in swarm_redis (tests/jobmon/jobmon_side/); test_jobmon_suite.py copies it into
jobmon's tests/integration/swarm/ as test_zz_<name> for the run with the swap plugin, and
removes it after.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobmon.client.swarm.builder import SwarmBuilder
from jobmon.client.swarm.task import SwarmTask
from jobmon.client.task_resources import TaskResources
from jobmon.client.task_template import TaskTemplate
from jobmon.client.tool import Tool
from jobmon.client.workflow_run import WorkflowRunFactory
from jobmon.core.requester import Requester

from swarm_redis.jobmon import JobmonSwarmState, attach_jobmon

if TYPE_CHECKING:
    from jobmon.client.swarm.state import StateUpdate


def test_resume_on_redis_then_attach_with_jobmon_objects(
    tool: Tool, task_template: TaskTemplate
) -> None:
    workflow = tool.create_workflow()
    #  t1 -> t2, t3 -> t4 (t3 fails for good: t4 never runs)
    t1 = task_template.create_task(arg="echo 1")
    t2 = task_template.create_task(arg="echo 2", upstream_tasks=[t1])
    t3 = task_template.create_task(arg="exit 1", upstream_tasks=[t1], max_attempts=1)
    t4 = task_template.create_task(
        arg="echo 4",
        upstream_tasks=[t2, t3],
        compute_resources={"foo": "bar"},
        fallback_queues=["null.q"],
    )
    workflow.add_tasks([t1, t2, t3, t4])
    workflow.run()  # on a JobmonSwarmState (swap plugin)

    factory = WorkflowRunFactory(workflow.workflow_id)
    factory.set_workflow_resume()
    factory.reset_task_statuses()
    wfr = factory.create_workflow_run()
    assert wfr.status is not None  # the property raises rather than answer None
    builder = SwarmBuilder(
        requester=Requester.from_defaults(),
        workflow_run_id=wfr.workflow_run_id,
        initial_status=wfr.status,
    )
    builder.build_from_workflow_id(workflow_id=workflow.workflow_id, edge_chunk_size=1)
    state: object = builder.state  # jobmon's SwarmState class, swapped at run time
    assert isinstance(state, JobmonSwarmState)
    # the builder registered every task before wiring the edges; its first use (or seal())
    # writes the final DAG
    assert state.seal() == 2

    # a process joining the run: jobmon's own task objects, bound to the shared registry
    joined = attach_jobmon(
        state.redis,
        wfr.workflow_run_id,
        requester=Requester.from_defaults(),
        prefix=state.keys.prefix,
    )
    assert set(joined.tasks.keys()) == {t3.task_id, t4.task_id}
    j3, j4 = joined.get_task(t3.task_id), joined.get_task(t4.task_id)
    assert isinstance(j3, SwarmTask) and isinstance(j4, SwarmTask)
    assert isinstance(j4.current_task_resources, TaskResources)
    assert j4.current_task_resources.requested_resources == {"foo": "bar"}
    assert j4.cluster is not None and j4.fallback_queues is not None
    assert len(j4.fallback_queues) == 1
    assert j3.status == "G" and j4.status == "G"
    # the edges jobmon's resume path wired after add_task reached Redis (sealed at first use)
    assert j3.downstream_swarm_tasks == {j4}
    assert j4.num_upstreams == 1
    joined.compute_initial_upstream_done_counts()
    assert j4.num_upstreams_done == 0

    # completing t3 through the joined state makes t4 ready, and it is reported for validation
    joined.enqueue_task(j3)
    assert joined.dequeue_task() is j3
    changed = joined.apply_update(_done(j3.task_id))  # type: ignore[arg-type]  # read by field
    assert j3 in changed
    assert [t.task_id for t in joined.propagate_completions({j3})] == [t4.task_id]
    assert [t.task_id for t in joined.ready_to_run] == [t4.task_id]


def _done(task_id: int) -> StateUpdate:
    from jobmon.client.swarm.state import StateUpdate

    return StateUpdate(task_statuses={task_id: "D"})
