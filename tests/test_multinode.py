"""A second Ray node on this machine: trials must land on both nodes.

The extra node joins the session's cluster for this module and is removed after.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from tests.conftest import LocalCluster
from tests.test_job_submit import submit_search
from tests.user_tasks import Rendezvous
from tune_app import run_search
from tune_app.run.placement import release_leaked_groups
from tune_app.run.train_run import TRAIN_ENV_DEFAULTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes(ray_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """Add a worker node (2 logical CPUs, custom resource ``worker_node``) on 127.0.0.1.

    ``ray start --address`` refuses to run with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
    and with it set to 1 resolves 127.0.0.1 to the machine's address; so the node is
    started the way Ray's own ``ray.cluster_utils.Cluster`` starts extra nodes.
    """
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    os.environ.update(TRAIN_ENV_DEFAULTS)  # inherited by the node's workers
    params = RayParams(
        node_ip_address="127.0.0.1",
        gcs_address=ray_cluster.gcs_address,
        num_cpus=2,
        num_gpus=0,
        resources={"worker_node": 1},
        object_store_memory=200 * 1024**2,
        min_worker_port=0,
        max_worker_port=0,
        include_log_monitor=False,
        node_manager_port=0,
    )
    params.dashboard_agent_listen_port = None  # pick a free port, not the head's
    node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    try:
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline, "the worker node did not join"
            time.sleep(1)
        yield ray_cluster
    finally:
        node.kill_all_processes(check_alive=False, allow_graceful=True)


def cpu_holders() -> str:
    """What holds CPUs on the cluster: free resources, alive actors and placement
    groups that reserve CPUs, and running tasks (the failure message of a test that
    needs the cluster idle)."""
    from ray.util.state import list_actors, list_placement_groups, list_tasks

    actors = [
        f"{a.class_name} job={a.job_id} pid={a.pid} {a.required_resources}"
        for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=200)
        if (a.required_resources or {}).get("CPU")
    ]
    groups = [
        f"{g.placement_group_id[:8]} {g.state} {g.bundles} by job {g.creator_job_id}"
        for g in list_placement_groups(filters=[("state", "!=", "REMOVED")], detail=True)
    ]
    tasks = [
        f"{t.name} job={t.job_id} {t.required_resources}"
        for t in list_tasks(filters=[("state", "=", "RUNNING")], detail=True, limit=200)
        if (t.required_resources or {}).get("CPU")
    ]
    return (
        f"free {ray.available_resources()}; actors {actors}; placement groups {groups}; "
        f"tasks {tasks}"
    )


def worker_node_id() -> str:
    return next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "worker_node" in n["Resources"])


def test_trials_land_on_both_nodes(
    two_nodes: LocalCluster, small_space: Path, tracking_uri: str, tmp_path: Path
) -> None:
    # 2 CPUs per worker: each node fits exactly one trial's worker group. The two
    # trials' workers wait for each other before training, so they overlap however
    # fast the machine is, and the second group can only be placed on the other node.
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    # Both nodes' CPUs must be free (earlier tests' actors and placement groups on
    # this session's cluster released), or one group waits for the other and both
    # land on the same node by chance.
    # A group this session's searches left would keep a CPU for good: release them
    # (no search of this process runs between tests) and say so if the test fails.
    print("released before waiting:", release_leaked_groups(set()), cpu_holders())
    deadline = time.monotonic() + 120
    while ray.available_resources().get("CPU", 0) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) >= 4, cpu_holders()
    result = run_search(
        "random",
        small_space,
        task=Rendezvous(str(meeting), parties=2),
        budget_epochs=4,
        cpus_per_worker=2,
        max_concurrent=2,
        tracking_uri=tracking_uri,
        storage_path=tmp_path,
        verbose=False,
    )
    nodes = {n for cell in result.trials.nodes for n in cell.split(",") if n}
    # two worker processes met (a third arrives when the budget fits a third trial)
    assert len(list(meeting.glob("arrived-*"))) >= 2
    assert len(nodes) == 2, result.trials[["trial_id", "nodes", "epochs"]].to_string()
    assert worker_node_id() in nodes
    assert result.epochs_spent == 4


def test_ray_job_submit_on_the_multi_node_cluster(
    two_nodes: LocalCluster, small_space: Path, tmp_path: Path
) -> None:
    # No --working-dir here: both nodes share one session dir on this machine, and the
    # added node's runtime-env agent garbage-collects the job's unpacked working dir
    # (the installed package is importable anyway). On real nodes this cannot happen.
    nodes = submit_search(
        two_nodes, small_space, tmp_path, "--cpus-per-worker", "2", working_dir=False
    )
    assert set(nodes) <= {n["NodeID"] for n in ray.nodes() if n["Alive"]}
