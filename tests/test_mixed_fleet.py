"""A fleet mixing replica kinds behind one router (heterogeneous MLPerf systems, phased upgrades)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.deployment import Layout, make_deployment
from simulator.fleet import ReplicaGroup, simulate
from simulator.workload import PoissonArrivals, Workload


def _requests(rate_per_s: float, duration_s: float, seed: int = 3):
    wl = Workload(arrivals=PoissonArrivals(rate_per_s=rate_per_s), benchmark="llama2-70b")
    a, b = np.random.SeedSequence(seed).spawn(2)
    return wl.generate(duration_s, np.random.default_rng(a), np.random.default_rng(b))


@pytest.mark.parametrize("router", ["least-outstanding", "random", "power-of-two", "least-kv"])
def test_capacity_aware_routing_sends_more_work_to_faster_replicas(router):
    slow = make_deployment("llama2-70b", "mi300x", "fp8", Layout(tp=8))
    fast = make_deployment("llama2-70b", "mi355x", "fp4", Layout(tp=8))  # same GPUs per replica, faster
    groups = [ReplicaGroup(slow, 2), ReplicaGroup(fast, 2)]
    res = simulate(groups, _requests(30.0, 60.0), router=router, duration_s=60.0, warmup_s=10.0)
    rec = res.records
    assert np.all(~np.isnan(rec.finish_at_s))  # everything completes
    per_replica = np.bincount(rec.replica, minlength=4)
    assert per_replica.sum() == len(rec.replica)
    if router != "least-kv":  # KV load is not a capacity measure: no ordering promised
        assert per_replica[2:].sum() > per_replica[:2].sum()


def test_mixed_fleet_conserves_requests_and_is_deterministic():
    groups = [
        ReplicaGroup(make_deployment("llama2-70b", "mi325x", "fp8", Layout(tp=8)), 1),
        ReplicaGroup(make_deployment("llama2-70b", "mi300x", "fp8", Layout(tp=8)), 1),
    ]
    reqs = _requests(10.0, 30.0)
    a = simulate(groups, reqs, duration_s=30.0, seed=5)
    b = simulate(groups, reqs, duration_s=30.0, seed=5)
    np.testing.assert_array_equal(a.records.finish_at_s, b.records.finish_at_s)
    np.testing.assert_array_equal(a.records.replica, b.records.replica)
    assert len(reqs) == int(np.sum(~np.isnan(a.records.finish_at_s))) + a.rejected
