"""The pieces the planner sizes with: candidates, their packaging, analytic bounds, the simulation evaluator.

A *candidate* is one (hardware, named precision, parallel layout) of a scenario. For each the planner
needs:

- :func:`rack_for` - the packaging figures (GPUs per node, nodes per rack, scale-up domain, node power,
  price), scenario overrides first, then the hardware profile, then documented defaults.
- :func:`analytic_bounds` - from the iteration-time model alone: the best p99 TTFT and TPOT a replica
  can reach (one request alone: prefill of the p99 prompt; one decode step at the p99 context), a guess
  of the highest rate one replica sustains (seeds the search) and an optimistic upper bound.
- :class:`SimulationEvaluator` - the ``sizing.Evaluator`` that answers "does a fleet of n replicas
  meet the SLO at this rate?" by simulating it (``simulation.run``): one replica runs for the
  scenario's ``duration_s``, whole fleets for ``verify_duration_s`` (both scaled by ``fidelity``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from simulator.deployment import Deployment, Layout, MemoryPlan
from simulator.errors import InputError
from simulator.hardware import Accelerator, load_accelerator
from simulator.iteration import BatchShape, StepModel, prefill_pairs
from simulator.metrics import Slo, queue_delay_growth
from simulator.models import load_model, no_speculative_error
from simulator.packaging import Packaging, package
from simulator.scenario import FORMATS_AUTO, Scenario, WorkloadSpec
from simulator.simulation import run
from simulator.sizing import LoadVerdict

DEFAULT_NODES_PER_RACK = 4  # ASSUMPTION: four 8-GPU servers per (air-cooled, ~40-70 kW) rack
LENGTH_SAMPLES = 20_000  # token-length draws behind the analytic p99 bounds
P99 = 99.0
TPOT_GUESS_MARGIN_FRAC = 0.8  # the rate guess keeps the decode step under 80% of the TPOT limit
RATE_HI_FACTOR = 4.0  # search upper bound = this x the optimistic capacity
MIN_RATE_DIVISOR = 8.0  # the feasibility probe runs one replica at guess / 8
MIN_PROBE_REQUESTS = 500  # ... with at least this many arrivals in its measurement window
MIN_WINDOW_REQUESTS = 200  # a one-replica run's window lasts long enough for this many expected arrivals
DEFAULT_WARMUP_FRAC = 0.2  # warm-up share of the minimum run length
WARMUP_LATENCIES = 3.0  # warm-up >= this many mean request latencies (replicas fill up)
WINDOW_LATENCIES = 4.0  # measurement window >= this many mean request latencies
FLEET_LENGTH_FACTOR = 2.0  # fleet runs: window and cool-down this many times the one-replica multiples
FLEET_WARMUP_FACTOR = 4.0  # ... and warm-up this many times (fleets near capacity converge slowly)
QUEUE_HORIZON_S = 600.0  # MLPerf's minimum run: TTFT growing at g s per s must add < the limit in this long
BORDERLINE_RISE_FRAC = 0.1  # a saturated verdict whose backlog grew by less than this is re-run longer
EXTEND_FACTOR = 2.0  # ... with warm-up and window this many times longer
# Fleets whose run would take more replica-steps than this keep the one-replica estimate: ~3.5 min of
# wall time at the DES benchmark's ~7 us per replica-step (benchmarks/des_speed.py)
MAX_FLEET_REPLICA_STEPS = 30_000_000


@dataclass(frozen=True)
class Candidate:
    """One (hardware, named precision, layout) to size."""

    hardware: str
    precision: str
    layout: Layout

    @property
    def label(self) -> str:
        """e.g. 'mi355x fp4 TP2'."""
        return f"{self.hardware} {self.precision} {self.layout.label()}"


def auto_precision(acc: Accelerator) -> str:
    """The precision MLPerf submitters used on a generation: fp4 where the hardware has fp4 tensor cores
    (Blackwell, CDNA4 and later), else fp8 (Hopper, CDNA3)."""
    return "fp4" if "fp4" in acc.supported_compute_formats else "fp8"


def enumerate_candidates(scenario: Scenario) -> list[Candidate]:
    """Every hardware x format x layout of the scenario, in that order.

    Cross-product artefacts are skipped silently: ``ep > tp * pp``, ``ep > 1`` on a dense model,
    attention-DP at tp 1 when attention-TP is listed too (the same layout), and layouts whose
    replicas-per-node is not listed in ``layouts.replicas_per_node``. Other invalid
    layouts (tp beyond the scale-up domain, ...) stay and become infeasible rows with the reason.
    Raises ``InputError`` when nothing is left.
    """
    model = load_model(scenario.model)
    moe = model.num_experts > 0
    spec = scenario.layouts
    drafts = [sd for sd in spec.speculative if model.speculative is not None or not sd]
    if not drafts:
        raise no_speculative_error(model.id, "layouts.speculative: ")
    out: list[Candidate] = []
    for hw in scenario.hardware:
        acc = accelerator_for(scenario, hw)
        rack = rack_for(scenario, acc)
        formats = [auto_precision(acc)] if scenario.formats == FORMATS_AUTO else scenario.formats
        for fmt, tp, pp, ep, attn, sd in product(formats, spec.tp, spec.pp, spec.ep, spec.attention, drafts):
            if ep > tp * pp or (ep > 1 and not moe) or (attn == "dp" and tp == 1 and "tp" in spec.attention):
                continue  # (attention-DP over one GPU is attention-TP over one GPU: searched once)
            per_replica = tp * pp
            if spec.replicas_per_node is not None and not (
                rack.gpus_per_node % per_replica == 0
                and rack.gpus_per_node // per_replica in spec.replicas_per_node
            ):
                continue
            out.append(Candidate(hw, fmt, Layout(tp=tp, pp=pp, ep=ep, attention=attn, speculative=sd)))
    if not out:
        raise InputError(
            f"no layout to search: layouts (tp {spec.tp}, pp {spec.pp}, ep {spec.ep}, replicas_per_node "
            f"{spec.replicas_per_node}) leave no valid combination for {scenario.model}"
        )
    return out


# --------------------------------------------------------------------------------------------- packaging
def _pick(value: Any, hardware: str) -> Any:
    return value.get(hardware) if isinstance(value, dict) else value


def accelerator_for(scenario: Scenario, hardware: str) -> Accelerator:
    """The hardware profile, with the scenario's scale-up domain override applied."""
    acc = load_accelerator(hardware)
    domain = _pick(scenario.packaging.scale_up_domain_gpus, acc.id)
    return (
        acc.with_overrides(scaleup_domain_gpus=domain)
        if domain and domain != acc.scaleup_domain_gpus
        else acc
    )


@dataclass(frozen=True)
class Rack:
    """Packaging figures of one hardware (W, USD/GPU-hour; None where unknown or no costs asked)."""

    gpus_per_node: int
    nodes_per_rack: int
    scale_up_domain_gpus: int
    node_power_w: float | None
    power_per_gpu_w: float | None
    price_usd_per_gpu_hour: float | None


def rack_for(scenario: Scenario, acc: Accelerator) -> Rack:
    """Scenario packaging overrides, else the profile. Node power scales with GPUs per node when that is
    overridden; without a node figure it is GPUs x TDP (which understates a server). Racks default to one
    scale-up domain for rack-scale systems (NVL72: 18 trays), else ``DEFAULT_NODES_PER_RACK`` nodes."""
    pk = scenario.packaging
    gpn = _pick(pk.gpus_per_node, acc.id) or acc.gpus_per_node
    domain = acc.scaleup_domain_gpus
    npr = _pick(pk.nodes_per_rack, acc.id) or (domain // gpn if domain > gpn else DEFAULT_NODES_PER_RACK)
    node_w = acc.node_power_w * gpn / acc.gpus_per_node if acc.node_power_w is not None else None
    if node_w is None and acc.power_per_gpu_w is not None:
        node_w = acc.power_per_gpu_w * gpn
    price = None
    if scenario.costs is not None:
        price = _pick(scenario.costs.usd_per_gpu_hour, acc.id)
        price = acc.price_usd_per_gpu_hour if price is None else price
    return Rack(gpn, npr, domain, node_w, acc.power_per_gpu_w, price)


def pack(
    scenario: Scenario, rack: Rack, layout: Layout, replicas: int, output_tokens_per_s: float | None = None
) -> Packaging:
    """``packaging.package`` with the scenario's headroom, PUE and prices (power 0 when unknown)."""
    costs = scenario.costs
    return package(
        replicas=replicas,
        tp=layout.tp,
        pp=layout.pp,
        gpus_per_node=rack.gpus_per_node,
        nodes_per_rack=rack.nodes_per_rack,
        scale_up_domain_gpus=rack.scale_up_domain_gpus,
        node_power_w=rack.node_power_w or 0.0,
        power_per_gpu_w=rack.power_per_gpu_w or 0.0,
        pue=costs.pue if costs else 1.0,
        spare_nodes=scenario.headroom.spare_nodes,
        headroom_frac=scenario.headroom.spare_frac,
        price_usd_per_gpu_hour=rack.price_usd_per_gpu_hour,
        usd_per_kwh=costs.usd_per_kwh if costs else None,
        output_tokens_per_s=output_tokens_per_s,
    )


def max_replicas_within(scenario: Scenario, rack: Rack, layout: Layout) -> int | None:
    """Most replicas whose provisioned fleet keeps ``packaging.max_gpus``/``max_racks`` (None: no limit)."""
    max_gpus, max_racks = scenario.packaging.max_gpus, scenario.packaging.max_racks
    if max_gpus is None and max_racks is None:
        return None

    def fits(n: int) -> bool:
        p = pack(scenario, rack, layout, n)
        return (max_gpus is None or p.gpus_provisioned <= max_gpus) and (
            max_racks is None or p.racks <= max_racks
        )

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


# --------------------------------------------------------------------------------------------- analytic
@dataclass(frozen=True)
class Bounds:
    """What the iteration-time model alone says about one replica (s, tokens, requests/s).

    ``best_*``: a request alone (no queueing, no batching): p99 TTFT = prefill of the p99 prompt, p99
    TPOT = one decode step of batch 1 at the p99 mean context (input + output / 2). No load does better.
    ``rate_guess_per_s``: decode batch kept under 80% of the TPOT limit and within KV and
    ``max_num_seqs``, plus each request's marginal prefill cost. ``rate_hi_per_s``: 4x the same without
    the TPOT limit (the search's upper bound). ``mean_e2e_hi_s``: mean request latency of a replica that
    meets the SLO is at most the TTFT limit plus the mean output times the smaller of the TPOT limit and
    the longest step (a full batch plus a full prefill chunk).
    """

    best_ttft_p99_s: float
    best_tpot_p99_s: float
    p99_input_tokens: int
    p99_context_tokens: float
    rate_guess_per_s: float
    rate_hi_per_s: float
    mean_e2e_hi_s: float


def _largest_batch_within(model: StepModel, limit_b: int, context_tokens: float, step_limit_s: float) -> int:
    if model.time_of(model.decode_shape(1, context_tokens)) > step_limit_s:
        return 1
    lo, hi = 1, max(limit_b, 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (
            (mid, hi)
            if model.time_of(model.decode_shape(mid, context_tokens)) <= step_limit_s
            else (lo, mid - 1)
        )
    return lo


def analytic_bounds(
    dep: Deployment, plan: MemoryPlan, workload: WorkloadSpec, slo: Slo, rng: np.random.Generator
) -> Bounds:
    """See :class:`Bounds`; ``rng`` draws the token lengths behind the p99 figures."""
    model = StepModel(dep)
    inputs, outputs = workload.length_model().sample(LENGTH_SAMPLES, rng)
    p99_in = int(np.percentile(inputs, P99))
    p99_ctx = float(np.percentile(inputs + outputs / 2.0, P99))
    mean_in, mean_out = float(inputs.mean()), float(outputs.mean())
    ctx = mean_in + mean_out / 2.0
    kv_batch = int(plan.kv_capacity_tokens / max(ctx, 1.0))
    batch_cap = max(1, min(dep.max_num_seqs, kv_batch))
    batch = _largest_batch_within(model, batch_cap, ctx, TPOT_GUESS_MARGIN_FRAC * slo.tpot_p99_s)

    def rate_at(b: int) -> float:
        decode = model.time_of(model.decode_shape(b, ctx))
        chunk = min(mean_in, dep.max_batched_tokens)
        mixed = model.decode_shape(b, ctx)
        with_prefill = BatchShape(
            prefill_tokens=chunk,
            prefill_pairs_full=prefill_pairs(chunk, 0.0),
            decode_seqs=mixed.decode_seqs,
            decode_ctx_full=mixed.decode_ctx_full,
            decode_ctx_sliding=mixed.decode_ctx_sliding,
        )
        prefill_cost = (model.time_of(with_prefill) - decode) * mean_in / max(chunk, 1.0)
        return 1.0 / (mean_out * decode / b + max(prefill_cost, 0.0))

    full = model.decode_shape(batch_cap, ctx)
    chunk_max = max(dep.max_batched_tokens - batch_cap, 0)
    longest_step_s = model.time_of(
        BatchShape(
            prefill_tokens=chunk_max,
            prefill_pairs_full=prefill_pairs(chunk_max, mean_in),
            decode_seqs=full.decode_seqs,
            decode_ctx_full=full.decode_ctx_full,
            decode_ctx_sliding=full.decode_ctx_sliding,
        )
    )
    return Bounds(
        best_ttft_p99_s=model.prefill_time_s(max(p99_in, 1)),
        best_tpot_p99_s=model.time_of(model.decode_shape(1, p99_ctx)),
        p99_input_tokens=p99_in,
        p99_context_tokens=p99_ctx,
        rate_guess_per_s=rate_at(batch),
        rate_hi_per_s=RATE_HI_FACTOR * rate_at(batch_cap),
        mean_e2e_hi_s=slo.ttft_p99_s + mean_out * min(slo.tpot_p99_s, longest_step_s),
    )


def min_probe_rate_per_s(bounds: Bounds, window_s: float) -> float:
    """The light load at which one replica must meet the SLO for the candidate to be feasible at all:
    the guess / 8, raised to give ``MIN_PROBE_REQUESTS`` arrivals in the ``window_s`` measurement window
    (fewer make the saturation test fire on ordinary fluctuations), but at most the guess / 4."""
    guess = bounds.rate_guess_per_s
    return min(max(guess / MIN_RATE_DIVISOR, MIN_PROBE_REQUESTS / window_s), guess / 4.0)


# --------------------------------------------------------------------------------------------- simulation
RunCallback = Callable[[int, float, float], None]


class SimulationEvaluator:
    """``sizing.Evaluator`` backed by ``simulation.run``, every run with the scenario seed (common random
    numbers make the verdict smoother in rate). ``on_run(num_replicas, rate_per_s, wall_s)`` hears of
    every run.

    Run lengths: the saturation test looks for a backlog growing through the measurement window, which
    is only meaningful once the replicas are full, so the warm-up lasts at least ``WARMUP_LATENCIES``
    mean request latencies (arrival to last token) and the window at least ``WINDOW_LATENCIES``. Fleet
    runs, which decide the answer, have a window twice as long (``FLEET_LENGTH_FACTOR``) and a warm-up
    four times (``FLEET_WARMUP_FACTOR``): fleets are verified near capacity, where a replica's batch
    grows toward its steady size for minutes (measured on the Quick start's 80-84 MI355X fleets: ~200 s,
    while the old 2x warm-up of ~150 s left the window's batches still rising, which the in-system trend
    rule read as saturation on some seeds and not others: answers 80-82 over seeds 0-4).
    ``search_duration_s`` (one replica) and ``fleet_duration_s`` (fleets, with the router) are minimums.
    One-replica runs use ``latency_hint_s`` (an upper bound, see ``Bounds.mean_e2e_hi_s``); fleet runs
    use ``fleet_latency_s`` = (mean, p99) when set (the planner passes those measured at the highest rate
    one replica passed: the fleet runs each replica near that rate), and their warm-up also covers the
    p99 latency (long requests fill the replicas last). Arrivals go on after the window (``simulation.run``'s
    cool-down: a one-replica run's warm-up; a fleet's one-replica warm-up multiple, at least its p99
    latency), so the window's last requests finish under load rather than in a drain with a shrinking
    batch, which would flatter their TPOT.
    These latency multiples do not shrink with the scenario's ``fidelity`` (which scales the minimums):
    shorter runs would make the saturation test fire on replicas still filling up. Near capacity the
    replicas converge slowly, and a backlog still creeping up can read as saturation: a saturated
    one-replica run whose backlog grew by less than ``BORDERLINE_RISE_FRAC`` of its arrivals is re-run
    with warm-up and window ``EXTEND_FACTOR`` times longer, and that run decides (an overloaded replica's
    backlog grows by about its overload fraction, so clear failures are not re-run); fleet runs are long
    from the start.

    ``throughput_factor`` (the calibrated per-model factor, ``efficiency.model_throughput_factor``): the
    real replica serves that many times the simulated one's load at the same latencies, so a run at
    ``rate_per_s`` simulates ``rate_per_s / throughput_factor`` and reports the carried tokens/s times the
    factor -- the transformation ``replay`` applies to the MLPerf rows it is validated on. Latencies, KV
    occupancy and utilisation are the simulated replica's.

    Verdict: ``meets_slo`` is MLPerf's test (p99 TTFT and p99 TPOT within the limits, not saturated).
    Saturated: ``metrics.detect_saturation``, or a queue that would outgrow the TTFT limit in a run as
    long as MLPerf's (``QUEUE_HORIZON_S``): TTFT rising through the window at g s per s
    (``metrics.queue_delay_growth``) with g x 600 s above the p99 TTFT limit. A fleet ~1% over capacity
    builds its queue too slowly for the backlog rule (2% of arrivals) and can pass a few-minute window at
    p99 TTFT just under the limit, yet has no steady state and fails MLPerf's 10-minute run (the Quick
    start's 80-replica fleet: TTFT rising at 0.007-0.010 s per s, p99 1.6-2.5 s; 81: under 0.0001).
    ``output_tokens_per_s`` counts the output tokens of requests arriving in the measurement window,
    divided by the window (the carried load); ``extra`` adds the per-user decode rate (1 / mean TPOT),
    p50 latencies, the mean latency, mean KV occupancy and preemptions.
    """

    def __init__(
        self,
        dep: Deployment,
        workload: WorkloadSpec,
        slo: Slo,
        *,
        router: str,
        seed: int,
        search_duration_s: float,
        fleet_duration_s: float,
        latency_hint_s: float,
        fleet_latency_s: tuple[float, float] | None = None,
        on_run: RunCallback | None = None,
        throughput_factor: float = 1.0,
    ) -> None:
        if not throughput_factor > 0:
            raise ValueError(f"throughput_factor must be > 0, got {throughput_factor}")
        self.deployment = dep
        self._spec = workload
        self._slo = slo
        self._router = router
        self._seed = seed
        self._search_s = search_duration_s
        self._fleet_s = fleet_duration_s
        self._hint_s = latency_hint_s
        self.fleet_latency_s = fleet_latency_s
        self._on_run = on_run
        self.throughput_factor = throughput_factor

    def timing(self, num_replicas: int) -> tuple[float, float]:
        """(duration_s, warmup_s) of a run of ``num_replicas`` replicas."""
        warmup_s, window_s, _ = self._lengths(num_replicas)
        return warmup_s + window_s, warmup_s

    def _lengths(self, num_replicas: int) -> tuple[float, float, float]:
        """(warm-up, window, cool-down) in s of a run of ``num_replicas`` replicas (class docstring)."""
        base = self._search_s if num_replicas == 1 else self._fleet_s
        mean_s, tail_s = (self._hint_s, 0.0)
        if num_replicas > 1 and self.fleet_latency_s is not None:
            mean_s, tail_s = self.fleet_latency_s
        scale = 1.0 if num_replicas == 1 else FLEET_LENGTH_FACTOR
        warm_scale = 1.0 if num_replicas == 1 else FLEET_WARMUP_FACTOR
        cooldown = max(DEFAULT_WARMUP_FRAC * base, WARMUP_LATENCIES * mean_s, tail_s)
        warmup = max(cooldown, warm_scale * WARMUP_LATENCIES * mean_s)
        return warmup, max((1.0 - DEFAULT_WARMUP_FRAC) * base, scale * WINDOW_LATENCIES * mean_s), cooldown

    def _run(self, num_replicas: int, rate_per_s: float, duration_s: float, warmup_s: float) -> Any:
        """Simulate the load the model replicas carry for a real ``rate_per_s`` (see the class docstring)."""
        simulated_rate_per_s = rate_per_s / self.throughput_factor
        cooldown_s = warmup_s if num_replicas == 1 else self._lengths(num_replicas)[2]
        return run(self.deployment, self._spec.at_rate(simulated_rate_per_s), num_replicas=num_replicas,
                   duration_s=duration_s, warmup_s=warmup_s, router=self._router, seed=self._seed,
                   slo=self._slo, cooldown_s=cooldown_s)

    def fleet_replica_steps(self, num_replicas: int, steps_per_replica_s: float) -> float:
        """Replica-steps a run of ``num_replicas`` would simulate (warm-up, window and cool-down), each
        replica stepping ``steps_per_replica_s`` times per simulated second (as one replica did alone at
        about the same per-replica load): the cost of the run, independent of the machine."""
        return num_replicas * sum(self._lengths(num_replicas)) * steps_per_replica_s

    def _stretched(self, num_replicas: int, rate_per_s: float) -> tuple[float, float]:
        """``timing`` with a one-replica window long enough for ``MIN_WINDOW_REQUESTS`` expected arrivals
        (at the light loads that probe feasibility a latency-based window may expect only one or two,
        and a p99 needs a sample; a run with no arrival at all cannot be judged)."""
        duration_s, warmup_s = self.timing(num_replicas)
        if num_replicas == 1:
            simulated_rate_per_s = rate_per_s / self.throughput_factor
            duration_s = max(duration_s, warmup_s + MIN_WINDOW_REQUESTS / simulated_rate_per_s)
        return duration_s, warmup_s

    def evaluate(self, num_replicas: int, rate_per_s: float) -> LoadVerdict:
        started = time.perf_counter()
        duration_s, warmup_s = self._stretched(num_replicas, rate_per_s)
        outcome = self._run(num_replicas, rate_per_s, duration_s, warmup_s)
        borderline = 0.0 < backlog_rise_frac(outcome.run) < BORDERLINE_RISE_FRAC
        if num_replicas == 1 and outcome.summary.saturated and borderline:
            duration_s, warmup_s = EXTEND_FACTOR * duration_s, EXTEND_FACTOR * warmup_s
            outcome = self._run(num_replicas, rate_per_s, duration_s, warmup_s)
        if self._on_run is not None:
            self._on_run(num_replicas, rate_per_s, time.perf_counter() - started)
        s, result = outcome.summary, outcome.run
        rec = result.records
        window = (rec.arrival_at_s >= result.warmup_s) & (rec.arrival_at_s < result.duration_s)
        done = window & ~np.isnan(rec.finish_at_s)
        window_s = result.duration_s - result.warmup_s
        carried = self.throughput_factor * float(rec.output_tokens[done].sum()) / window_s
        tpot_mean, e2e_mean = s.tpot_s.mean.value, s.e2e_s.mean.value
        per_user = 1.0 / tpot_mean if tpot_mean > 0 and math.isfinite(tpot_mean) else None
        saturated = s.saturated or self._queue_outgrows_ttft(result)
        return LoadVerdict(
            meets_slo=bool(s.slo_met) and not saturated,
            saturated=saturated,
            ttft_p99_s=s.ttft_s.p99.value,
            tpot_p99_s=s.tpot_s.p99.value,
            output_tokens_per_s=carried,
            utilisation_frac=s.utilisation_frac,
            extra={
                "output_tokens_per_s_per_user": per_user,
                "ttft_p50_s": s.ttft_s.p50.value,
                "tpot_p50_s": s.tpot_s.p50.value,
                "e2e_mean_s": e2e_mean,
                "e2e_p99_s": s.e2e_s.p99.value,
                "kv_occupancy_mean_frac": s.kv_occupancy_mean_frac,
                "preemptions": s.preemptions,
                "simulated_s": duration_s,
                "steps_per_replica_s": result.steps / (result.num_replicas * result.end_at_s),
            },
        )

    def _queue_outgrows_ttft(self, result: Any) -> bool:
        """Whether TTFT grows through the window fast enough to add more than the p99 TTFT limit over
        ``QUEUE_HORIZON_S`` (a queue building slowly passes a short run but fails a run as long as MLPerf's,
        and never reaches a steady state)."""
        growth = queue_delay_growth(result.records, warmup_s=result.warmup_s, end_at_s=result.duration_s)
        return growth * QUEUE_HORIZON_S > self._slo.ttft_p99_s


def backlog_rise_frac(result: Any) -> float:
    """Growth of the number of requests in the system over the measurement window, as a fraction of the
    window's arrivals (0 for a stationary run; about the overload fraction for an overloaded one)."""
    rec = result.records
    finish = np.where(np.isnan(rec.finish_at_s), np.inf, rec.finish_at_s)

    def in_system(at_s: float) -> int:
        return int(np.sum(rec.arrival_at_s <= at_s) - np.sum(finish <= at_s))

    arrived = int(np.sum((rec.arrival_at_s >= result.warmup_s) & (rec.arrival_at_s < result.duration_s)))
    return (in_system(result.duration_s) - in_system(result.warmup_s)) / max(arrived, 1)
