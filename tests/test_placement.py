"""Trial placement from cluster resources."""

from __future__ import annotations

import pytest

from tune_app.errors import ConfigError
from tune_app.run.placement import plan


def test_cpu_machine_runs_one_trial_per_cpu() -> None:
    p = plan({"CPU": 2.0}, num_workers=1)
    assert (p.max_concurrent, p.gpus_per_worker) == (2, 0.0)
    assert "CPU" not in p.trial_resources  # the supervising trial reserves no CPU


def test_in_trial_mode_reserves_the_cpu_on_the_trial() -> None:
    p = plan({"CPU": 2.0}, num_workers=0)
    assert p.trial_resources["CPU"] == 1.0 and p.max_concurrent == 2


def test_two_nodes_of_four_gpus() -> None:
    cluster = {"CPU": 32.0, "GPU": 8.0}
    assert plan(cluster, num_workers=1).max_concurrent == 8
    four = plan(cluster, num_workers=4)
    assert (four.max_concurrent, four.gpus_per_worker) == (2, 1.0)
    packed = plan(cluster, num_workers=1, gpus_per_worker=0.25)
    assert packed.max_concurrent == 32
    assert "8 trial(s) at once, 1 Ray Train worker(s) each" in plan(cluster).describe()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"num_workers": 3}, "needs 3 CPU"),
        ({"gpus_per_worker": 1.0}, "needs 1 GPU"),
        ({"num_workers": -1}, "must be >= 0"),
        ({"max_concurrent": 0}, "must be >= 1"),
        ({"gpus_per_worker": 1.5}, "whole number"),
    ],
)
def test_impossible_requests_say_what_to_change(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        plan({"CPU": 2.0}, **kwargs)


@pytest.mark.usefixtures("ray_session")
def test_groups_a_search_leaves_are_released_whatever_their_state() -> None:
    """Groups created since ``before`` are removed, however far their creation got
    (one still PREPARED when a search ended held a CPU for the rest of the session);
    older ones are left alone."""
    import time

    import ray
    from ray.util.placement_group import placement_group, placement_group_table

    from tune_app.run.placement import live_placement_groups, release_leaked_groups

    older = placement_group([{"CPU": 0.01}])
    before = live_placement_groups()
    assert older.id.hex() in before
    groups = [placement_group([{"CPU": 0.01}]) for _ in range(3)]  # not awaited
    released = release_leaked_groups(before)
    assert released == {g.id.hex() for g in groups}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        table = placement_group_table()
        if all(table[g.id.hex()]["state"] == "REMOVED" for g in groups):
            break
        time.sleep(0.2)
    assert all(table[g.id.hex()]["state"] == "REMOVED" for g in groups), table
    assert table[older.id.hex()]["state"] != "REMOVED"
    ray.util.remove_placement_group(older)
