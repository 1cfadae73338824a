"""A serving fleet on the simpy clock (seconds): arrivals, router, replicas, a monitor; one entry point.

``simulate`` runs one seeded simulation of a fleet (possibly mixing replica kinds) on a given set of
requests and returns per-request records plus time series. Arrivals come from a ``RequestSet``; a
router that reads replica state (least-outstanding, least-KV, power-of-two) is called at each
arrival instant by a router process; a state-blind router (round-robin, random) routes everything
up front and each replica pulls its arrivals at step boundaries, with identical semantics and one
simpy event per request fewer.

The run ends when every request has finished, or at ``last arrival + drain_limit_s`` (requests then
still in flight stay unfinished: the metrics flag such a run as saturated). When arrivals go on past the
measurement window (a cool-down, see ``simulation.run``), it ends as soon as every request arriving in
the window has finished, and at the latest ``drain_limit_s`` after the window.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from simulator.deployment import Deployment, plan_memory, require_fit
from simulator.engine import ReplicaEngine, RequestTable
from simulator.iteration import StepModel
from simulator.kv_cache import KVCache
from simulator.metrics import MetricsSummary, RequestRecords, Slo, summarize
from simulator.replica import Replica
from simulator.router import make_router
from simulator.workload import RequestSet

STATE_BLIND_ROUTERS = frozenset({"round-robin", "random"})
_NUM_MONITOR_SAMPLES = 200
_CAPACITY_PROBE_BATCH = 256
_CAPACITY_PROBE_CONTEXT_TOKENS = 1024


@dataclass(frozen=True)
class ReplicaGroup:
    """``count`` identical replicas of one deployment. ``step_model`` overrides the iteration-time
    model (any ``StepModel`` subclass, e.g. a fixed or random step time for queueing-theory tests).
    ``role``: what the replicas serve (``engine.ROLES``: mixed, or one phase of disaggregated serving)."""

    deployment: Deployment
    count: int
    step_model: StepModel | None = None
    role: str = "mixed"


@dataclass(frozen=True)
class RunResult:
    """What one simulation produced (SI units; instants on the simulation clock)."""

    records: RequestRecords
    end_at_s: float
    duration_s: float
    warmup_s: float
    offline: bool
    busy_s: float
    num_replicas: int
    rejected: int
    queue_samples: tuple[np.ndarray, np.ndarray]
    kv_samples: tuple[np.ndarray, np.ndarray]
    steps: int

    def summary(self, slo: Slo | None = None) -> MetricsSummary:
        """Aggregate metrics over the measurement window [warmup_s, duration_s]."""
        return summarize(
            self.records,
            warmup_s=self.warmup_s,
            end_at_s=self.duration_s if not self.offline else self.end_at_s,
            offline=self.offline,
            slo=slo,
            queue_samples=self.queue_samples,
            busy_s=self.busy_s,
            num_replicas=self.num_replicas,
            kv_samples=self.kv_samples,
        )


class _View:
    """What a state-aware router sees, read live from the replicas."""

    def __init__(self, replicas: list[Replica]) -> None:
        self._engines = [r.engine for r in replicas]
        self.capacity_weight = [r.capacity_weight for r in replicas]

        self.outstanding: list[int] = [0] * len(replicas)
        for i, e in enumerate(self._engines):
            e.share_outstanding(self.outstanding, i)

    @property
    def kv_used_frac(self) -> list[float]:
        return [e.kv.occupancy_frac for e in self._engines]


def capacity_weight(step_model: StepModel) -> float:
    """Relative serving capacity of a replica: decode tokens/s at a probe batch (for weighted routing)."""
    dep = step_model.deployment
    batch = min(dep.max_num_seqs, _CAPACITY_PROBE_BATCH)
    return batch / step_model.time_of(step_model.decode_shape(batch, _CAPACITY_PROBE_CONTEXT_TOKENS))


def _build_replicas(
    env: simpy.Environment, groups: Sequence[ReplicaGroup], table: RequestTable
) -> list[Replica]:
    replicas: list[Replica] = []
    built = []
    for group in groups:
        dep = group.deployment
        plan = plan_memory(dep)
        require_fit(dep, plan)
        model = group.step_model or StepModel(dep)
        built.append((group.count, dep, plan, model, capacity_weight(model), group.role))
    top = max(b[4] for b in built)
    for count, dep, plan, model, weight, role in built:
        for _ in range(count):
            engine = ReplicaEngine(
                len(replicas),
                model,
                KVCache(plan.kv_capacity_blocks, plan.kv_block_tokens),
                table,
                max_num_seqs=dep.max_num_seqs,
                max_batched_tokens=dep.max_batched_tokens,
                role=role,
            )
            replicas.append(Replica(env, engine, weight / top))
    return replicas


def _router_process(
    env: simpy.Environment, replicas: list[Replica], router: Any, arrivals: list[float]
) -> Generator[Any, Any, None]:
    view = _View(replicas)
    timeout = env.timeout
    for rid, at_s in enumerate(arrivals):
        if at_s > env.now:
            yield timeout(at_s - env.now)
        replicas[router.choose(view)].push(rid)


class _WindowDone:
    """Whether every request arriving before ``end_at_s`` (s) (the first ``count`` ids) has finished."""

    def __init__(self, table: RequestTable, count: int, end_at_s: float) -> None:
        self._finish_at_s, self._count, self._end_at_s = table.finish_at_s, count, end_at_s
        self._next = 0  # every id below it has finished

    def __call__(self, now_s: float) -> bool:
        if now_s < self._end_at_s:
            return False
        finish = self._finish_at_s
        while self._next < self._count and finish[self._next] == finish[self._next]:  # not NaN
            self._next += 1
        return self._next >= self._count


def _monitor(
    env: simpy.Environment,
    replicas: list[Replica],
    interval_s: float,
    last_arrival_at_s: float,
    limit_at_s: float,
    samples: list[tuple[float, int, float, float]],
    stop: simpy.Event,
    router_proc: simpy.Process | None = None,
    window_done: _WindowDone | None = None,
) -> Generator[Any, Any, None]:
    engines = [r.engine for r in replicas]
    while True:
        waiting = sum(len(e.waiting) for e in engines)
        waiting += sum(bisect.bisect_right(r.pending_at_s, env.now, lo=r._next) - r._next for r in replicas)
        kv = sum(e.kv.occupancy_frac for e in engines) / len(engines)
        samples.append((env.now, waiting, kv, sum(e.busy_s for e in engines)))
        idle = env.now >= last_arrival_at_s and all(e.outstanding == 0 and not e.has_work for e in engines)
        pending = any(r._next < len(r.pending_ids) for r in replicas)
        pending = pending or (router_proc is not None and router_proc.is_alive)
        window_over = window_done is not None and window_done(env.now)
        if (idle and not pending) or env.now >= limit_at_s or window_over:
            stop.succeed()
            return
        yield env.timeout(min(interval_s, max(limit_at_s - env.now, 0.0)) or interval_s)


def simulate(
    groups: Sequence[ReplicaGroup] | Deployment,
    requests: RequestSet,
    *,
    num_replicas: int = 1,
    router: str = "least-outstanding",
    seed: int | np.random.SeedSequence = 0,
    duration_s: float | None = None,
    warmup_s: float = 0.0,
    offline: bool = False,
    drain_limit_s: float | None = None,
) -> RunResult:
    """Simulate a fleet serving ``requests``. ``groups`` may be one deployment (``num_replicas`` copies)
    or several ``ReplicaGroup``s behind one router. Deterministic for a given seed."""
    if isinstance(groups, Deployment):
        groups = [ReplicaGroup(groups, num_replicas)]
    table = RequestTable(
        requests.arrival_at_s.tolist(), requests.input_tokens.tolist(), requests.output_tokens.tolist()
    )
    env = simpy.Environment()
    replicas = _build_replicas(env, groups, table)
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed).spawn(3)[2]
    rng_router = np.random.default_rng(seq)
    router_obj = make_router(router, len(replicas), rng_router)
    arrivals = table.arrival_at_s
    last_at_s = arrivals[-1] if arrivals else 0.0
    cooldown = duration_s is not None and not offline and last_at_s > duration_s  # arrivals after the window
    duration_s = duration_s if duration_s is not None else last_at_s
    router_proc = None
    if router in STATE_BLIND_ROUTERS:
        _pre_route(replicas, router_obj, arrivals)
    else:
        router_proc = env.process(_router_process(env, replicas, router_obj, arrivals))
    drain = drain_limit_s if drain_limit_s is not None else max(60.0, duration_s)
    limit = min(last_at_s, duration_s) + drain if not offline else math.inf
    interval = max(duration_s, 1.0) / _NUM_MONITOR_SAMPLES
    samples: list[tuple[float, int, float, float]] = []
    stop = env.event()
    window = _WindowDone(table, bisect.bisect_left(arrivals, duration_s), duration_s) if cooldown else None
    env.process(_monitor(env, replicas, interval, last_at_s, limit, samples, stop, router_proc, window))
    env.run(until=stop)
    return _result(table, replicas, env.now, duration_s, warmup_s, offline, samples)


def _pre_route(replicas: list[Replica], router: Any, arrivals: list[float]) -> None:
    view = _View(replicas)
    for rid, at_s in enumerate(arrivals):
        r = replicas[router.choose(view)]
        r.pending_ids.append(rid)
        r.pending_at_s.append(at_s)


def _busy_until(samples: np.ndarray, until_s: float) -> float:
    """Summed replica busy time over [0, until_s], from the monitor's cumulative samples."""
    k = int(np.searchsorted(samples[:, 0], until_s, side="right")) - 1
    if k < 0 or samples[k, 0] <= 0:
        return 0.0
    return float(samples[k, 3] * until_s / samples[k, 0])


def _result(
    table: RequestTable,
    replicas: list[Replica],
    end_at_s: float,
    duration_s: float,
    warmup_s: float,
    offline: bool,
    samples: list[tuple[float, int, float, float]],
) -> RunResult:
    arr = np.array(samples, dtype=float).reshape(-1, 4)
    records = RequestRecords(
        arrival_at_s=np.asarray(table.arrival_at_s, dtype=float),
        first_token_at_s=np.asarray(table.first_token_at_s, dtype=float),
        finish_at_s=np.asarray(table.finish_at_s, dtype=float),
        input_tokens=np.asarray(table.input_tokens, dtype=np.int64),
        output_tokens=np.asarray(table.output_tokens, dtype=np.int64),
        preemptions=np.asarray(table.preemptions, dtype=np.int64),
        replica=np.asarray(table.replica, dtype=np.int64),
        scheduled_at_s=np.asarray(table.scheduled_at_s, dtype=float),
    )
    engines = [r.engine for r in replicas]
    return RunResult(
        records=records,
        end_at_s=end_at_s,
        duration_s=duration_s,
        warmup_s=warmup_s,
        offline=offline,
        busy_s=_busy_until(arr, end_at_s if offline else duration_s),
        num_replicas=len(engines),
        rejected=sum(e.rejected for e in engines),
        queue_samples=(arr[:, 0], arr[:, 1]),
        kv_samples=(arr[:, 0], arr[:, 2]),
        steps=sum(e.step for e in engines),
    )
