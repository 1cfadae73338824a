"""Sizing one candidate: reject it up front, search one replica, verify the fleet, build its row.

The steps are those of :mod:`simulator.planner` (which runs them for every candidate of a scenario):
:func:`search_one` does steps 1-2 (rejections with their numbers; the one-replica search and the
Poisson-splitting estimate) and returns a :class:`Found`, or a :class:`CandidateResult` for a rejected
candidate; :func:`finish_one` does steps 3-4 (whole-fleet verification with ``sizing.min_replicas`` or the
estimate kept as is; packaging; the table row). ``Found`` and ``CandidateResult`` are picklable, so the
planner can run candidates in worker processes. Other cases of a candidate (efficiency factors, hardware
figure overrides: :mod:`simulator.variants`) go through the same steps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.candidates import (
    MAX_FLEET_REPLICA_STEPS,
    Bounds,
    Candidate,
    Rack,
    SimulationEvaluator,
    accelerator_for,
    analytic_bounds,
    max_replicas_within,
    min_probe_rate_per_s,
    pack,
    rack_for,
)
from simulator.deployment import Deployment, make_deployment, plan_memory, require_fit
from simulator.efficiency import Efficiency, sizing_throughput_factor
from simulator.errors import InputError, NoFeasibleAnswer
from simulator.scenario import Scenario
from simulator.sizing import (
    CachedEvaluator,
    Evaluator,
    LoadVerdict,
    SizingOutcome,
    candidate_row,
    interactivity_curve,
    max_rate_one_replica,
    min_replicas,
    passes,
)
from simulator.units import s_to_ms, w_to_kw

EvaluatorFactory = Callable[[Deployment, Scenario, Bounds], Evaluator]
Overrides = tuple[tuple[str, float], ...]  # (SI figure key, value) for ``Accelerator.with_overrides``


@dataclass(frozen=True)
class CandidateResult:
    """One sized candidate: its table row, the search outcome (None when rejected before simulating),
    interactivity points (tokens/s per user, tokens/s per GPU) and whether only packaging limits stand
    in its way (``limited``)."""

    candidate: Candidate
    row: dict[str, Any]
    outcome: SizingOutcome | None = None
    curve: tuple[tuple[float, float], ...] = ()
    limited: bool = False


@dataclass(frozen=True)
class Hooks:
    """The planner's hooks (see :mod:`simulator.planner`) and the extra interactivity loads."""

    evaluator_factory: EvaluatorFactory | None = None
    curve_fractions: tuple[float, ...] = ()


@dataclass(frozen=True)
class Found:
    """A candidate after the one-replica search (picklable: crosses process boundaries)."""

    candidate: Candidate
    efficiency: Efficiency | None  # None: the deployment's own (``_deploy`` rebuilds it)
    bounds: Bounds
    rack: Rack
    cap: int
    limit: int | None
    rate_per_s: float
    verdict: LoadVerdict
    trace: tuple[tuple[float, LoadVerdict], ...]
    estimate: int
    num_evaluations: int
    accelerator_overrides: Overrides = ()  # a Variant's hardware figures (``_deploy`` applies them)

    def key(self, scenario: Scenario) -> float:
        """What ranking compares: GPUs of the estimate, or its $/hour when costs are given."""
        p = pack(scenario, self.rack, self.candidate.layout, self.estimate)
        return (
            (p.usd_per_hour if p.usd_per_hour is not None else math.inf) if scenario.costs else float(p.gpus)
        )


Message = Callable[[str], None]
TOO_LARGE = "too large to simulate"  # in the note of a row whose fleet was not simulated for its size


def _ms(value_s: float) -> str:
    return f"{s_to_ms(value_s):,.1f} ms"


class _Counting:
    """Counts evaluations and reports each (for progress)."""

    def __init__(self, inner: Evaluator, message: Message | None) -> None:
        self.inner, self.message, self.count = inner, message, 0

    def evaluate(self, num_replicas: int, rate_per_s: float) -> LoadVerdict:
        started = time.perf_counter()
        verdict = self.inner.evaluate(num_replicas, rate_per_s)
        self.count += 1
        if self.message is not None:
            what = "one replica" if num_replicas == 1 else f"fleet of {num_replicas:,}"
            self.message(
                f"{what} at {rate_per_s:,.1f} req/s: {'pass' if verdict.meets_slo else 'fail'} "
                f"({time.perf_counter() - started:.1f} s)"
            )
        return verdict


def _evaluator(
    sc: Scenario,
    hooks: Hooks,
    dep: Deployment,
    bounds: Bounds,
    fleet_latency_s: tuple[float, float] | None = None,
) -> Evaluator:
    if hooks.evaluator_factory is not None:
        return hooks.evaluator_factory(dep, sc, bounds)
    sim = sc.simulation
    return SimulationEvaluator(
        dep,
        sc.workload,
        sc.slo.to_slo(),
        router=sim.router,
        seed=sim.seed,
        search_duration_s=sim.search_duration_s,
        fleet_duration_s=sim.fleet_duration_s,
        latency_hint_s=bounds.mean_e2e_hi_s,
        fleet_latency_s=fleet_latency_s,
        throughput_factor=sizing_throughput_factor(dep.model.id, sc.slo.to_slo().tpot_p99_s),
    )


def _rejected(reason: str, num_evaluations: int = 0) -> SizingOutcome:
    return SizingOutcome(
        feasible=False,
        replicas=0,
        rate_per_replica_per_s=0.0,
        verdict=None,
        reason=reason,
        num_evaluations=num_evaluations,
    )


def limits_text(sc: Scenario) -> str:
    """The packaging limits the scenario sets, e.g. 'packaging.max_gpus=64 and packaging.max_racks=2'."""
    pk = sc.packaging
    return " and ".join(
        p
        for p in (
            f"packaging.max_gpus={pk.max_gpus}" if pk.max_gpus else "",
            f"packaging.max_racks={pk.max_racks}" if pk.max_racks else "",
        )
        if p
    )


def _deploy(
    sc: Scenario, cand: Candidate, efficiency: Efficiency | None = None, overrides: Overrides = ()
) -> Deployment:
    eng = sc.engine
    acc = accelerator_for(sc, cand.hardware)
    return make_deployment(
        sc.model,
        acc.with_overrides(**dict(overrides)) if overrides else acc,
        cand.precision,
        cand.layout,
        framework=eng.framework,
        kv_precision=eng.kv_precision,
        max_num_seqs=eng.max_num_seqs * cand.layout.schedulers,
        max_batched_tokens=eng.max_batched_tokens,
        efficiency=efficiency,
    )


def _bounds(sc: Scenario, dep: Deployment) -> Bounds:
    return analytic_bounds(
        dep, plan_memory(dep), sc.workload, sc.slo.to_slo(), np.random.default_rng(sc.simulation.seed)
    )


def deployment_of(sc: Scenario, found: Found) -> Deployment:
    """The deployment a searched candidate was sized with (its efficiency and hardware overrides)."""
    return _deploy(sc, found.candidate, found.efficiency, found.accelerator_overrides)


def screen_one(
    sc: Scenario, cand: Candidate, efficiency: Efficiency | None = None, overrides: Overrides = ()
) -> tuple[Deployment, Bounds, Rack, int | None] | CandidateResult:
    """Step 1 (no simulation): the row of a candidate rejected up front, or what its search needs."""
    rack = rack_for(sc, accelerator_for(sc, cand.hardware))
    try:
        dep = _deploy(sc, cand, efficiency, overrides)
        require_fit(dep, plan_memory(dep))
        pack(sc, rack, cand.layout, 1)
    except InputError as exc:
        return _result(sc, cand, rack, _rejected(str(exc)))
    bounds = _bounds(sc, dep)
    slo = sc.slo.to_slo()
    misses = []
    if bounds.best_ttft_p99_s > slo.ttft_p99_s:
        misses.append(
            f"best p99 TTFT {_ms(bounds.best_ttft_p99_s)} (prefill of the p99 prompt, "
            f"{bounds.p99_input_tokens:,} tokens, alone) > limit {_ms(slo.ttft_p99_s)}"
        )
    if bounds.best_tpot_p99_s > slo.tpot_p99_s:
        misses.append(
            f"best p99 TPOT {_ms(bounds.best_tpot_p99_s)} (one decode step alone at "
            f"{bounds.p99_context_tokens:,.0f} tokens of context) > limit {_ms(slo.tpot_p99_s)}"
        )
    if misses:
        return _result(
            sc,
            cand,
            rack,
            _rejected("SLO unreachable even at batch 1: " + "; ".join(misses)),
            dep=dep,
            bounds=bounds,
        )
    target = sc.target_rate_per_s()
    limit = max_replicas_within(sc, rack, cand.layout)
    if limit is not None and (limit == 0 or math.ceil(target / bounds.rate_hi_per_s) > limit):
        reason = (
            f"exceeds {limits_text(sc)}: at most {limit} replicas of {cand.layout.gpus} GPUs fit, and even "
            f"at an optimistic {bounds.rate_hi_per_s:,.1f} req/s per replica the target needs "
            f"{math.ceil(target / bounds.rate_hi_per_s)}"
        )
        return _result(sc, cand, rack, _rejected(reason), dep=dep, bounds=bounds, limited=True)
    return dep, bounds, rack, limit


def search_one(
    sc: Scenario,
    cand: Candidate,
    hooks: Hooks | None = None,
    message: Message | None = None,
    efficiency: Efficiency | None = None,
    overrides: Overrides = (),
    rate_guess_per_s: Callable[[Bounds], float] | None = None,
) -> Found | CandidateResult:
    """Steps 1-2 of the module docstring: a rejected row, or the one-replica search's result.
    ``rate_guess_per_s(bounds)`` replaces the analytic first guess by a close one: the search then
    brackets it in steps of (1 + rel_tol)^2 (it only saves evaluations)."""
    hooks = hooks or Hooks()
    screened = screen_one(sc, cand, efficiency, overrides)
    if isinstance(screened, CandidateResult):
        return screened
    dep, bounds, rack, limit = screened
    target = sc.target_rate_per_s()
    inner = _evaluator(sc, hooks, dep, bounds)
    if isinstance(inner, SimulationEvaluator):
        duration_s, warmup_s = inner.timing(1)
        window_s = duration_s - warmup_s
    else:
        window_s = sc.simulation.search_duration_s
    min_rate = min_probe_rate_per_s(bounds, window_s)
    evaluator = CachedEvaluator(_Counting(inner, message))
    rate, verdict = max_rate_one_replica(
        evaluator,
        rate_hi_per_s=bounds.rate_hi_per_s,
        min_rate_per_s=min_rate,
        rel_tol=sc.simulation.rel_tol,
        rate_guess_per_s=rate_guess_per_s(bounds) if rate_guess_per_s else bounds.rate_guess_per_s,
        bracket_factor=(1.0 + sc.simulation.rel_tol) ** 2 if rate_guess_per_s else None,
    )
    trace = tuple(sorted((r, v) for (n, r), v in evaluator.verdicts.items() if n == 1))
    if verdict is None:
        failed = evaluator.verdicts[(1, min_rate)]
        reason = (
            f"one replica misses the SLO even at {min_rate:.4g} req/s (p99 TTFT {_ms(failed.ttft_p99_s)}, "
            f"p99 TPOT {_ms(failed.tpot_p99_s)}{', saturated' if failed.saturated else ''}); alone, a "
            f"request gets p99 TTFT {_ms(bounds.best_ttft_p99_s)} and TPOT {_ms(bounds.best_tpot_p99_s)}"
        )
        return _result(sc, cand, rack, _rejected(reason, evaluator.num_evaluations), dep=dep, bounds=bounds)
    estimate = math.ceil(target / rate)
    cap = limit if limit is not None else max(math.ceil(target / min_rate), estimate + 1)
    # ``rate`` is the bracket's lower end (the true rate lies below rate * (1 + rel_tol)): reject outright
    # only when even the upper end needs more replicas than fit; otherwise the fleet search decides.
    if limit is not None and math.ceil(target / (rate * (1.0 + sc.simulation.rel_tol))) > limit:
        reason = (
            f"exceeds {limits_text(sc)}: at most {limit} replicas of {cand.layout.gpus} GPUs fit; one "
            f"replica sustains {rate:.4g} req/s, so the target needs about {estimate}"
        )
        outcome = dataclasses.replace(
            _rejected(reason, evaluator.num_evaluations),
            rate_per_replica_per_s=rate,
            estimated_replicas=estimate,
            single_replica_verdicts=trace,
        )
        return _result(sc, cand, rack, outcome, dep=dep, bounds=bounds, limited=True)
    return Found(
        cand, efficiency, bounds, rack, cap, limit, rate, verdict, trace, estimate, evaluator.num_evaluations,
        overrides,
    )


def _fleet_latency(found: Found) -> tuple[float, float] | None:
    extra = found.verdict.extra
    return (extra["e2e_mean_s"], extra["e2e_p99_s"]) if "e2e_p99_s" in extra else None


def _fleet_job(args: tuple[Scenario, Found, int]) -> tuple[int, LoadVerdict]:
    """One whole-fleet simulation at the target (runs in a worker process)."""
    sc, found, num_replicas = args
    dep = deployment_of(sc, found)
    evaluator = _evaluator(sc, Hooks(), dep, found.bounds, _fleet_latency(found))
    return num_replicas, evaluator.evaluate(num_replicas, sc.target_rate_per_s())


PAIR_ROUNDS = 3   # rounds of two parallel fleet runs scanning from the estimate before galloping on


def _prefetch(sc: Scenario, found: Found, counts: list[int], cache: CachedEvaluator, pair: tuple[int, int],
              message: Message | None) -> None:
    """Simulate the fleets of ``pair`` at once, in two processes, into ``cache``. Same verdicts as
    sequential runs."""
    import multiprocessing

    started = time.perf_counter()
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    jobs = [(sc, found, n) for n in pair]
    with multiprocessing.get_context(method).Pool(len(jobs)) as pool:
        for n, verdict in pool.imap_unordered(_fleet_job, jobs):
            cache.verdicts[(n, sc.target_rate_per_s())] = verdict
            counts[0] += 1
    if message is not None:
        message(f"fleets of {pair[1]:,} and {pair[0]:,} in parallel ({time.perf_counter() - started:.1f} s)")


def _scan_in_pairs(sc: Scenario, found: Found, counts: list[int], cache: CachedEvaluator, start: int,
                   message: Message | None) -> int:
    """Where ``sizing.min_replicas`` should start after scanning from ``start`` two fleets at a time
    (up to ``PAIR_ROUNDS`` rounds of two runs in parallel): down (n, n - 1; n - 2, n - 3; ...) while
    both pass, or, when ``start`` fails, up (n + 1, n + 2; ...) until one passes. The one-replica
    estimate is usually within a few replicas of the answer (a state-aware router pools a few percent
    below it; a replica judged alone near capacity can look a little better than in a fleet), so the
    scan finds it in one or two rounds of wall time where galloping takes three or four sequential
    runs. Returns the lowest count that passed (its neighbour below is then in the cache), or the
    highest that failed (the search gallops up from there). Verdicts are the cached ones, so the answer
    is the one sequential search would find with a monotone verdict."""
    rate = sc.target_rate_per_s()
    if start < 2:
        return start
    _prefetch(sc, found, counts, cache, (start, start - 1), message)
    upper, lower = (passes(cache.verdicts[(k, rate)]) for k in (start, start - 1))
    n = start
    if upper:  # scan down while both pass
        for _ in range(PAIR_ROUNDS - 1):
            if not lower or n - 2 < 2:
                break
            n -= 2
            _prefetch(sc, found, counts, cache, (n, n - 1), message)
            upper, lower = (passes(cache.verdicts[(k, rate)]) for k in (n, n - 1))
            if not upper:
                return n + 1
        return n - 1 if lower else n
    for _ in range(PAIR_ROUNDS - 1):  # scan up until one passes
        if n + 2 > found.cap:
            break
        _prefetch(sc, found, counts, cache, (n + 2, n + 1), message)
        for k in (n + 1, n + 2):
            if passes(cache.verdicts[(k, rate)]):
                return k
        n += 2
    return n


def _too_big_to_verify(sc: Scenario, found: Found, evaluator: Evaluator) -> str | None:
    """Why the fleet of the estimate is too large to simulate (``MAX_FLEET_REPLICA_STEPS``), or None.
    Such a fleet keeps the one-replica estimate, which Poisson splitting makes exact for a random router
    and an upper bound for state-aware ones."""
    steps_per_replica_s = found.verdict.extra.get("steps_per_replica_s")
    if not isinstance(evaluator, SimulationEvaluator) or steps_per_replica_s is None:
        return None
    steps = evaluator.fleet_replica_steps(found.estimate, steps_per_replica_s)
    if steps <= MAX_FLEET_REPLICA_STEPS:
        return None
    return (
        f"estimate, not verified: a fleet of {found.estimate:,} replicas is {TOO_LARGE} ({steps:.2g} "
        f"replica-steps, limit {MAX_FLEET_REPLICA_STEPS:.0e}); Poisson splitting makes the estimate exact "
        f"for random routing, and {sc.simulation.router} does at least as well"
    )


def finish_one(
    sc: Scenario,
    found: Found,
    verify: bool,
    hooks: Hooks | None = None,
    message: Message | None = None,
    workers: int = 1,
    verify_from: int | None = None,
) -> CandidateResult:
    """Steps 3-4: verify the estimate with whole-fleet runs (or keep it), package, build the row.
    ``workers`` > 1 scans from the estimate two fleets at a time in parallel (``_scan_in_pairs``;
    no hooks; not inside a worker).
    ``verify_from``: search only fleets of at least that many replicas, starting there
    (``sizing.min_replicas(at_least_start=True)``: one fleet run when it passes)."""
    hooks = hooks or Hooks()
    target = sc.target_rate_per_s()
    dep = deployment_of(sc, found)
    inner = _evaluator(sc, hooks, dep, found.bounds, _fleet_latency(found))
    too_big = _too_big_to_verify(sc, found, inner) if verify else None
    verify = verify and too_big is None
    counting = _Counting(inner, message)
    evaluator = CachedEvaluator(counting)
    common = {
        "rate_per_replica_per_s": found.rate_per_s,
        "estimated_replicas": found.estimate,
        "single_replica_verdicts": found.trace,
    }
    if not verify:
        v = found.verdict
        fleet = dataclasses.replace(v, output_tokens_per_s=sc.target_output_tokens_per_s())
        outcome = SizingOutcome(
            feasible=True,
            replicas=found.estimate,
            verdict=fleet,
            reason=None,
            num_evaluations=found.num_evaluations,
            **common,
        )
    else:
        try:
            # start at the middle of the one-replica bracket [rate, rate * (1 + rel_tol)]
            middle_rate = found.rate_per_s * math.sqrt(1.0 + sc.simulation.rel_tol)
            start = min(verify_from or math.ceil(target / middle_rate), found.cap)
            if workers > 1 and start > 1 and hooks.evaluator_factory is None and verify_from is None:
                prefetched = [0]
                start = _scan_in_pairs(sc, found, prefetched, evaluator, start, message)
                counting.count += prefetched[0]
            replicas, verdict = min_replicas(
                evaluator, rate_per_s=target, start=start, max_replicas=found.cap,
                at_least_start=verify_from is not None,
            )
            outcome = SizingOutcome(
                feasible=True,
                replicas=replicas,
                verdict=verdict,
                reason=None,
                num_evaluations=found.num_evaluations + counting.count,
                **common,
            )
        except NoFeasibleAnswer as exc:
            prefix = f"exceeds {limits_text(sc)}: " if found.limit is not None else ""
            outcome = SizingOutcome(
                feasible=False,
                replicas=0,
                verdict=None,
                num_evaluations=found.num_evaluations + counting.count,
                reason=f"{prefix}{exc} (one replica sustains "
                f"{found.rate_per_s:.4g} req/s; estimate {found.estimate})",
                **common,
            )
            return _result(
                sc,
                found.candidate,
                found.rack,
                outcome,
                dep=dep,
                bounds=found.bounds,
                limited=found.limit is not None,
            )
    curve = _curve(found, evaluator, hooks.curve_fractions)
    result = _result(sc, found.candidate, found.rack, outcome, dep=dep, bounds=found.bounds, curve=curve)
    result.row["verified"] = verify
    if too_big is not None:
        result.row["note"] = too_big
    elif not verify and sc.simulation.verify == "none":
        result.row["note"] = "estimate, not verified by a fleet simulation (simulation.verify: none)"
    return result


def _curve(
    found: Found, evaluator: Evaluator, fractions: Iterable[float]
) -> tuple[tuple[float, float], ...]:
    points = list(found.trace)
    for frac in fractions:
        rate = frac * found.rate_per_s
        points.append((rate, evaluator.evaluate(1, rate)))
    return tuple(interactivity_curve(points, found.candidate.layout.gpus))


def _result(
    sc: Scenario,
    cand: Candidate,
    rack: Rack,
    outcome: SizingOutcome,
    *,
    dep: Deployment | None = None,
    bounds: Bounds | None = None,
    limited: bool = False,
    curve: tuple[tuple[float, float], ...] = (),
) -> CandidateResult:
    pkg = None
    v = outcome.verdict if outcome.feasible else None
    if outcome.feasible:
        pkg = pack(sc, rack, cand.layout, outcome.replicas, v.output_tokens_per_s if v else None)
    lay = cand.layout
    row: dict[str, Any] = {
        "hardware": cand.hardware,
        "precision": cand.precision,
        "layout": lay.label(),
        "tp": lay.tp,
        "pp": lay.pp,
        "ep": lay.ep,
        "attention": lay.attention,
        "speculative": lay.speculative,
        "framework": dep.framework if dep else None,
        "gpus_per_replica": lay.gpus,
        "feasible": outcome.feasible,
        "reason": outcome.reason,
    }
    base = candidate_row(
        hardware=cand.hardware,
        format=cand.precision,
        layout=lay.label(),
        outcome=outcome,
        target_rate_per_s=sc.target_rate_per_s(),
        packaging=pkg.to_dict() if pkg else None,
    )
    row.update({k: val for k, val in base.items() if k not in ("format", "hardware", "layout")})
    if pkg is not None:
        row["gpu_power_kw"] = w_to_kw(pkg.gpu_power_w)
        row["energy_usd_per_hour"] = pkg.energy_usd_per_hour
        if rack.node_power_w is None:
            row.update(power_kw=None, gpu_power_kw=None, facility_power_kw=None)
        if sc.costs is None:
            row["facility_power_kw"] = None
        row["load_frac"] = sc.target_rate_per_s() / (outcome.replicas * outcome.rate_per_replica_per_s)
    row["estimated_replicas"] = outcome.estimated_replicas or None
    if bounds is not None:
        row["best_ttft_p99_s"], row["best_tpot_p99_s"] = bounds.best_ttft_p99_s, bounds.best_tpot_p99_s
    row["hardware_status"] = accelerator_for(sc, cand.hardware).status
    return CandidateResult(cand, row, outcome if outcome.num_evaluations else None, curve, limited)
