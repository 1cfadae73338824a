"""One simulation, end to end: deployment(s) + workload + seed -> run result and summary.

Seeding: one ``seed`` spawns independent generators (``numpy.random.SeedSequence.spawn``) for arrivals,
token lengths and the router, so changing one component's draws never reshuffles another's.
Warm-up: latency statistics exclude requests arriving in the first ``warmup_s`` (default: 20% of the
run, at most 30 s); offline runs have none. Cool-down: with ``cooldown_s`` > 0 arrivals go on for that
long after the measurement window ends, so the window's last requests finish under the same load as the
others instead of in a drain with a shrinking batch (which would flatter their TPOT); the run stops as soon
as every request of the window has finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.deployment import Deployment
from simulator.errors import InputError
from simulator.fleet import ReplicaGroup, RunResult, simulate
from simulator.metrics import MetricsSummary, Slo
from simulator.workload import OfflineArrivals, Workload

DEFAULT_WARMUP_FRAC = 0.2
MAX_DEFAULT_WARMUP_S = 30.0


@dataclass(frozen=True)
class Outcome:
    """A run and its summary."""

    run: RunResult
    summary: MetricsSummary
    num_requests: int


def default_warmup_s(duration_s: float) -> float:
    """Warm-up excluded from latency statistics: 20% of the run, capped at 30 s."""
    return min(DEFAULT_WARMUP_FRAC * duration_s, MAX_DEFAULT_WARMUP_S)


def run(
    fleet: Deployment | Sequence[ReplicaGroup],
    workload: Workload,
    *,
    num_replicas: int = 1,
    duration_s: float = 120.0,
    router: str = "least-outstanding",
    seed: int = 0,
    slo: Slo | None = None,
    warmup_s: float | None = None,
    drain_limit_s: float | None = None,
    cooldown_s: float = 0.0,
) -> Outcome:
    """Generate the workload's requests for ``duration_s`` (+ ``cooldown_s`` of unmeasured arrivals) and
    simulate the fleet serving them; the measurement window is [warm-up, ``duration_s``]."""
    if duration_s <= 0:
        raise InputError(f"duration must be > 0 s, got {duration_s}")
    if cooldown_s < 0:
        raise InputError(f"cool-down must be >= 0 s, got {cooldown_s}")
    if num_replicas < 1:
        raise InputError(f"replicas must be >= 1, got {num_replicas}")
    arrivals_seq, lengths_seq, router_seq = np.random.SeedSequence(seed).spawn(3)
    offline = isinstance(workload.arrivals, OfflineArrivals)
    requests = workload.generate(
        duration_s + cooldown_s,  # offline: every request at t = 0 whatever the duration
        np.random.default_rng(arrivals_seq),
        np.random.default_rng(lengths_seq),
    )
    if len(requests) == 0:
        raise InputError(f"no request arrives within {duration_s} s; raise the rate or the duration")
    warm = 0.0 if offline else (default_warmup_s(duration_s) if warmup_s is None else warmup_s)
    result = simulate(
        fleet,
        requests,
        num_replicas=num_replicas,
        router=router,
        seed=router_seq,
        duration_s=None if offline else duration_s,
        warmup_s=warm,
        offline=offline,
        drain_limit_s=drain_limit_s,
    )
    return Outcome(result, result.summary(slo), len(requests))


def records_columns(result: RunResult) -> tuple[dict[str, Any], dict[str, str]]:
    """Per-request records as columns (for --requests-out) and their units."""
    r = result.records
    columns = {
        "arrival_at_s": r.arrival_at_s,
        "scheduled_at_s": r.scheduled_at_s,
        "first_token_at_s": r.first_token_at_s,
        "finish_at_s": r.finish_at_s,
        "ttft_s": r.first_token_at_s - r.arrival_at_s,
        "e2e_s": r.finish_at_s - r.arrival_at_s,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "preemptions": r.preemptions,
        "replica": r.replica,
    }
    units = {k: "s" for k in columns if k.endswith("_s")}
    units.update({"input_tokens": "tokens", "output_tokens": "tokens", "preemptions": "count"})
    return columns, units
