"""Planning: size every candidate of a scenario, rank them, compare generations, sweep what-ifs.

Per candidate (hardware x format x layout, see ``candidates.enumerate_candidates``):

1. Rejected without simulating, with the reason and its numbers, when the deployment is invalid
   (``make_deployment``), does not fit in memory (``require_fit``), cannot reach the SLO even with one
   request alone (``candidates.analytic_bounds``: the p99 prompt's prefill vs the TTFT limit, one decode
   step vs the TPOT limit), or cannot fit the packaging limits even at an optimistic capacity.
2. Search: ``sizing.max_rate_one_replica``, the highest rate one replica sustains within the SLO
   (simulated; seeded by the analytic guess), and the estimate ``ceil(target / that rate)``: a random
   router splits Poisson arrivals into Poisson streams, so n replicas at target/n each behave exactly
   like the one replica, and state-aware routers (least-outstanding, ...) do at least as well.
3. Verify: ``sizing.min_replicas``, whole-fleet simulations with the scenario's router at the target,
   starting from the middle of the one-replica bracket, until the fleet passes and one replica fewer
   fails (the first two fleets run in parallel when a CPU is free). Fleet runs are the expensive part,
   so by default (``simulation.verify: competitive``) only candidates whose estimate is within
   ``verify_margin_frac`` of the best (GPUs, or $/hour with costs; per hardware in ``compare``) are
   verified, repeating until no unverified estimate can beat a verified answer. Other rows keep the
   estimate (``verified: false``). For the true one-replica rate that is an upper bound with state-aware
   routers; the searched rate carries run-to-run noise, so a verified fleet can also need a few % more
   replicas (measured within 3% on the README comparison).
4. Packaging (nodes, racks, power, cost) of the replica count, with the scenario's headroom.

Rows are ranked by GPUs, or by $/hour when the scenario has ``costs``; infeasible candidates keep their
row with ``feasible: false`` and ``reason``. Candidates run in parallel processes (``workers``); the
answer does not depend on it.

Hooks: ``evaluator_factory(deployment, scenario, bounds) -> sizing.Evaluator`` replaces the simulation
(tests use fakes with known answers). ``efficiency_variants(deployment) -> {tag: Efficiency | Variant}``
(e.g. ``uncertainty.IntervalVariants``: ``{"p05": optimistic, "p95": pessimistic}``) re-sizes the best
row (per hardware with ``group_by_hardware``) in each case, after the ranking and more cheaply (see
``variants.size_variant``: a search seeded by its answer, then, if it was verified, fleet runs
from its pooling-corrected estimate upward; the cases in parallel processes), adds
``gpus_<tag>`` next to ``gpus`` in every row (None where not computed or infeasible) and records each case
in ``SizingResult.cases``. A case identical to the deployment reuses its answer without simulating.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

from simulator import __version__
from simulator.candidate_search import (
    CandidateResult,
    EvaluatorFactory,
    Found,
    Hooks,
    finish_one,
    limits_text,
    screen_one,
    search_one,
)
from simulator.candidates import Candidate, enumerate_candidates
from simulator.efficiency import sizing_throughput_factor
from simulator.errors import InputError, unknown_name
from simulator.scenario import Scenario
from simulator.scenario_files import Override, build_scenario, revalidate, scenario_hash
from simulator.sizing import COMPARE_UNITS, compare_rows, rank
from simulator.variants import EfficiencyVariants, VariantCase, size_variants, with_case_columns

CURVE_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75)  # extra one-replica loads for interactivity plots
ROW_UNITS: dict[str, str] = {
    **COMPARE_UNITS,
    "gpus_p05": "count",
    "gpus_p95": "count",
    "gpus_per_replica": "count",
    "gpu_power_kw": "kW",
    "energy_usd_per_hour": "USD/h",
    "load_frac": "fraction",
    "kv_occupancy_mean_frac": "fraction",
    "ttft_p50_s": "s",
    "tpot_p50_s": "s",
    "e2e_mean_s": "s",
    "e2e_p99_s": "s",
    "best_ttft_p99_s": "s",
    "best_tpot_p99_s": "s",
    "preemptions": "count",
    "simulated_s": "s",
    "steps_per_replica_s": "1/s",
    "uplift_vs_baseline": "ratio",
    "gpus_ratio_vs_baseline": "ratio",
    "power_ratio_vs_baseline": "ratio",
}


@dataclass(frozen=True)
class ProgressEvent:
    """Progress: in ``stage`` ('search' or 'verify'), ``done`` of ``total`` candidates finished;
    ``message`` says what ``label`` is doing (``finished`` False) or what it came to (True)."""

    stage: str
    done: int
    total: int
    label: str
    message: str
    finished: bool


ProgressFn = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class SizingResult:
    """All candidates of a scenario, ranked (``rows``), with run statistics and the variant cases."""

    scenario: Scenario
    rows: list[dict[str, Any]]
    results: list[CandidateResult]
    num_simulations: int
    wall_s: float
    cases: tuple[VariantCase, ...] = ()

    @property
    def best(self) -> dict[str, Any] | None:
        """The top-ranked feasible row, or None."""
        return next((r for r in self.rows if r.get("feasible")), None)

    def header(self) -> dict[str, Any]:
        """What was asked: scenario, model, target, SLO (SI units)."""
        sc = self.scenario
        slo = sc.slo.to_slo()
        return {
            "scenario": sc.name,
            "model": sc.model,
            "benchmark": sc.workload.benchmark,
            "target_output_tokens_per_s": sc.target_output_tokens_per_s(),
            "target_rate_per_s": sc.target_rate_per_s(),
            "slo_ttft_p99_s": slo.ttft_p99_s,
            "slo_tpot_p99_s": slo.tpot_p99_s,
            "router": sc.simulation.router,
            "seed": sc.simulation.seed,
            "fidelity": sc.simulation.fidelity,
            "model_throughput_factor": sizing_throughput_factor(sc.model, slo.tpot_p99_s),
        }

    def meta(self) -> dict[str, Any]:
        """Run manifest for exports (deterministic: no wall-clock figures)."""
        return {
            **self.header(),
            "scenario_hash": scenario_hash(self.scenario),
            "fleetsim_version": __version__,
            "scenario_resolved": self.scenario.model_dump(mode="json"),
        }

    def to_json(self) -> dict[str, Any]:
        """``{"best": row | None, "candidates": [rows], ...header}`` (the ``size --format json`` contract),
        plus ``interval_cases`` (``VariantCase`` fields) when variants were sized."""
        out = {
            **self.header(),
            "best": self.best,
            "candidates": self.rows,
            "num_simulations": self.num_simulations,
        }
        if self.cases:
            out["interval_cases"] = [dataclasses.asdict(c) for c in self.cases]
        return out


# --------------------------------------------------------------------------------------------- a scenario
def _search_job(args: tuple[Scenario, Candidate]) -> Found | CandidateResult:
    return search_one(*args)


def _finish_job(args: tuple[Scenario, Found, bool, tuple[float, ...]]) -> CandidateResult:
    sc, found, verify, fractions = args
    return finish_one(sc, found, verify, Hooks(curve_fractions=fractions))


def _run(
    jobs: list[Any], fn: Callable[[Any], Any], workers: int, on_done: Callable[[int, Any], None]
) -> list[Any]:
    """``fn`` over ``jobs`` in ``workers`` processes (in order of completion), results in job order."""
    out: list[Any] = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            out[i] = fn(job)
            on_done(i, out[i])
        return out
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(min(workers, len(jobs))) as pool:
        for i, res in pool.imap_unordered(_Indexed(fn), list(enumerate(jobs))):
            out[i] = res
            on_done(i, res)
    return out


class _Indexed:
    """Picklable ``(i, job) -> (i, fn(job))``."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, item: tuple[int, Any]) -> tuple[int, Any]:
        return item[0], self.fn(item[1])


def _to_verify(
    sc: Scenario, found: list[Found], done: dict[int, CandidateResult], per_hardware: Collection[str]
) -> list[int]:
    """Indices of candidates to verify next (see the module docstring, step 3): those competitive
    overall, plus, for each hardware in ``per_hardware`` (``compare``), those competitive within it."""
    pending = [i for i in range(len(found)) if i not in done]
    if sc.simulation.verify in ("all", "none"):
        return pending
    chosen = set(_competitive(sc, found, done, range(len(found))))
    for hw in per_hardware:
        members = [i for i in range(len(found)) if found[i].candidate.hardware == hw]
        chosen |= set(_competitive(sc, found, done, members))
    return sorted(chosen)


def _competitive(
    sc: Scenario, found: list[Found], done: dict[int, CandidateResult], members: Iterable[int]
) -> list[int]:
    """Unverified ``members`` whose estimate is within the margin of the best among them (a verified
    answer, or else an estimate)."""
    members = list(members)
    margin = 1.0 + sc.simulation.verify_margin_frac
    verified = [_row_key(sc, done[i].row) for i in members if i in done and done[i].row["feasible"]]
    best = min([*verified, *(found[i].key(sc) for i in members if i not in done)], default=math.inf)
    return [i for i in members if i not in done and found[i].key(sc) <= best * margin]


def _row_key(sc: Scenario, row: Mapping[str, Any]) -> float:
    value = row.get("usd_per_hour") if sc.costs else row.get("gpus")
    return math.inf if value is None else float(value)


def size(
    scenario: Scenario,
    *,
    evaluator_factory: EvaluatorFactory | None = None,
    efficiency_variants: EfficiencyVariants | None = None,
    progress: ProgressFn | None = None,
    curve_fractions: Sequence[float] = (),
    strict_limits: bool = True,
    group_by_hardware: bool = False,
    verify_hardware: Collection[str] = (),
) -> SizingResult:
    """Size every candidate of ``scenario`` and rank them (see the module docstring).

    ``strict_limits``: when no candidate is feasible and packaging limits are what stand in the way,
    raise ``InputError`` naming the limit (a target impossible within the limits is bad input).
    ``group_by_hardware``: the interval cases re-size each hardware's best (``compare``).
    ``verify_hardware``: hardware whose best is verified by whole-fleet runs even when another
    hardware's is far better (``compare``: every generation, or only the baseline).
    """
    started = time.perf_counter()
    sc = scenario
    hooks = Hooks(evaluator_factory, tuple(curve_fractions))
    cands = enumerate_candidates(sc)
    if strict_limits and (sc.packaging.max_gpus or sc.packaging.max_racks):
        _check_limits(sc, cands)
    workers = 1 if evaluator_factory else (sc.simulation.workers or os.cpu_count() or 1)
    counts = {"search": 0, "verify": 0, "interval": 0}

    def emit(stage: str, total: int, label: str, message: str, finished: bool) -> None:
        if progress is not None:
            progress(ProgressEvent(stage, counts[stage], total, label, message, finished))

    def searched(i: int, res: Found | CandidateResult) -> None:
        counts["search"] += 1
        msg = (
            f"one replica sustains {res.rate_per_s:,.2f} req/s -> about {res.estimate:,} replicas"
            if isinstance(res, Found)
            else f"infeasible: {res.row['reason']}"
        )
        emit("search", len(cands), cands[i].label, msg, True)

    if workers <= 1:
        first = []
        for i, cand in enumerate(cands):
            first.append(
                search_one(sc, cand, hooks, lambda m, c=cand: emit("search", len(cands), c.label, m, False))
            )
            searched(i, first[-1])
    else:
        first = _run([(sc, c) for c in cands], _search_job, workers, searched)
    found = [r for r in first if isinstance(r, Found)]
    finished: dict[int, CandidateResult] = {}
    verify_total = 0
    while True:
        batch = _to_verify(sc, found, finished, verify_hardware)
        if not batch:
            break
        verify_total += len(batch)
        batch_verify = sc.simulation.verify != "none"

        def verified(j: int, res: CandidateResult,
                     batch: list[int] = batch, total: int = verify_total) -> None:
            counts["verify"] += 1
            finished[batch[j]] = res
            row = res.row
            msg = (
                f"{row['replicas']:,} replicas, {row['gpus']:,} GPUs"
                if row["feasible"]
                else f"infeasible: {row['reason']}"
            )
            emit("verify", total, found[batch[j]].candidate.label, msg, True)

        if workers <= 1 or len(batch) == 1:
            for j, i in enumerate(batch):
                label = found[i].candidate.label
                res = finish_one(
                    sc,
                    found[i],
                    batch_verify,
                    hooks,
                    lambda m, lb=label, total=verify_total: emit("verify", total, lb, m, False),
                    workers=workers,
                )
                verified(j, res)
        else:
            _run(
                [(sc, found[i], batch_verify, hooks.curve_fractions) for i in batch],
                _finish_job,
                workers,
                verified,
            )
    for i in range(len(found)):
        if i not in finished:
            finished[i] = finish_one(sc, found[i], False, dataclasses.replace(hooks, curve_fractions=()))
            finished[i].row["note"] = (
                f"estimate, not verified by a fleet simulation: more than "
                f"{sc.simulation.verify_margin_frac:.0%} above the best"
            )
    by_found = iter(finished[i] for i in range(len(found)))
    results = [r if isinstance(r, CandidateResult) else next(by_found) for r in first]
    ranked = [{"rank": r.pop("rank"), **r} for r in rank([r.row for r in results], sc.costs is not None)]
    simulations = sum(r.row.get("num_evaluations") or 0 for r in results)
    cases: list[VariantCase] = []
    if efficiency_variants is not None:

        def emit_case(total: int, label: str, message: str, finished: bool) -> None:
            counts["interval"] += finished
            emit("interval", total, label, message, finished)

        cases = size_variants(sc, ranked, found, finished, efficiency_variants, hooks, workers=workers,
                              run=_run, progress=emit_case, group_by_hardware=group_by_hardware)
        ranked = with_case_columns(ranked, cases)
        simulations += sum(c.num_evaluations for c in cases)
    result = SizingResult(sc, ranked, results, simulations, time.perf_counter() - started, tuple(cases))
    if strict_limits and result.best is None and any(r.limited for r in results):
        _raise_limited(sc, results)
    return result


def _check_limits(sc: Scenario, cands: list[Candidate]) -> None:
    """Fail fast (before any simulation) when no candidate can fit the packaging limits even at its
    optimistic capacity, and every other candidate is rejected anyway."""
    screened = [screen_one(sc, c) for c in cands]
    if all(isinstance(s, CandidateResult) for s in screened) and any(s.limited for s in screened):
        _raise_limited(sc, [s for s in screened if isinstance(s, CandidateResult)])


def _raise_limited(sc: Scenario, results: list[CandidateResult]) -> None:
    limited = min((r for r in results if r.limited), key=lambda r: r.candidate.layout.gpus)
    raise InputError(
        f"the target of {sc.target_output_tokens_per_s():,.0f} output tokens/s is impossible within "
        f"{limits_text(sc)}: {limited.candidate.label} {limited.row['reason']}"
    )


# --------------------------------------------------------------------------------------------- compare
@dataclass(frozen=True)
class CompareResult:
    """Each hardware's best candidate with ratios to the baseline, plus interactivity curves."""

    sizing: SizingResult
    baseline: str
    rows: list[dict[str, Any]]
    curves: dict[str, list[tuple[float, float]]]

    def to_json(self) -> dict[str, Any]:
        """``{"baseline": id, "rows": [...], ...}`` (the ``compare --format json`` contract)."""
        return {
            **self.sizing.header(),
            "baseline": self.baseline,
            "rows": self.rows,
            "candidates": self.sizing.rows,
            "num_simulations": self.sizing.num_simulations,
            **({"interval_cases": [dataclasses.asdict(c) for c in self.sizing.cases]} if self.sizing.cases
               else {}),
        }


def frontier(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Upper-right Pareto frontier of (per-user, per-GPU) points, sorted by per-user throughput."""
    best, kept = -math.inf, []
    for user, gpu in sorted(points, key=lambda p: (-p[0], -p[1])):
        if gpu > best:
            kept.append((user, gpu))
            best = gpu
    return sorted(kept)


def compare(
    scenario: Scenario,
    *,
    hardware: Sequence[str] | None = None,
    baseline: str | None = None,
    formats: str | Sequence[str] | None = "auto",
    curves: bool = False,
    progress: ProgressFn | None = None,
    evaluator_factory: EvaluatorFactory | None = None,
    efficiency_variants: EfficiencyVariants | None = None,
    verify_each: bool = False,
) -> CompareResult:
    """Size the scenario on each of ``hardware`` (default: the scenario's) in ``formats`` ('auto': the
    precision MLPerf submitters used on each generation; None: the scenario's) and divide by
    ``baseline`` (default: the scenario's ``baseline``, else the first hardware).

    Whole-fleet verification (``simulation.verify: competitive``) covers the candidates competitive
    overall and the baseline's best; with ``verify_each`` every generation's best. The others keep their
    one-replica estimate (``verified: false``)."""
    updates: dict[str, Any] = {}
    if hardware:
        updates["hardware"] = list(hardware)
    if formats is not None:
        updates["formats"] = formats if isinstance(formats, str) else list(formats)
    sc = revalidate(scenario, updates)
    base = (baseline or sc.baseline or sc.hardware[0]).strip().lower()
    if base not in sc.hardware:
        raise unknown_name("baseline hardware", base, sc.hardware)
    result = size(
        sc,
        curve_fractions=CURVE_FRACTIONS if curves else (),
        progress=progress,
        evaluator_factory=evaluator_factory,
        efficiency_variants=efficiency_variants,
        group_by_hardware=True,
        verify_hardware=sc.hardware if verify_each else (base,),
    )
    rows = compare_rows(result.rows, baseline=base, by_cost=sc.costs is not None)
    for row in rows:
        row.pop("rank", None)
        row["uplift_vs_baseline"] = row.get("output_tokens_per_s_per_gpu_vs_baseline")
        row["gpus_ratio_vs_baseline"] = row.get("gpus_vs_baseline")
        row["power_ratio_vs_baseline"] = row.get("power_kw_vs_baseline")
        if not row.get("feasible"):
            row["reason"] = "; ".join(
                f"{r['precision']} {r['layout']}: {r['reason']}"
                for r in result.rows
                if r["hardware"] == row["hardware"]
            )
    points: dict[str, list[tuple[float, float]]] = {hw: [] for hw in sc.hardware}
    for res in result.results:
        points[res.candidate.hardware].extend(res.curve)
    return CompareResult(result, base, rows, {hw: frontier(p) for hw, p in points.items() if p})


# --------------------------------------------------------------------------------------------- sweep
def sweep(
    raw: dict[str, Any],
    grid: Sequence[tuple[tuple[str, ...], Sequence[Any]]],
    *,
    overrides: Sequence[Override] = (),
    where: str = "scenario",
    progress: ProgressFn | None = None,
    evaluator_factory: EvaluatorFactory | None = None,
    efficiency_variants: EfficiencyVariants | None = None,
) -> list[dict[str, Any]]:
    """One row per grid point (the cross product of the ``grid`` values, applied after ``overrides``):
    the grid values (columns named by their dotted paths), then the best candidate's row, or
    ``feasible: false`` with every candidate's reason. Every point is validated before any is sized."""
    paths = [".".join(p) for p, _ in grid]
    combos = list(product(*(values for _, values in grid)))
    scenarios = [
        build_scenario(raw, [*overrides, *((p, v) for (p, _), v in zip(grid, combo, strict=True))], where)
        for combo in combos
    ]
    rows = []
    for n, (combo, sc) in enumerate(zip(combos, scenarios, strict=True), start=1):
        point = dict(zip(paths, combo, strict=True))
        label = ", ".join(f"{k}={v}" for k, v in point.items())

        def relay(event: ProgressEvent, n: int = n, label: str = label) -> None:
            if progress is not None:
                progress(dataclasses.replace(event, label=f"[{n}/{len(combos)}: {label}] {event.label}"))

        result = size(sc, progress=relay, strict_limits=False, evaluator_factory=evaluator_factory,
                      efficiency_variants=efficiency_variants)
        best = result.best
        if best is None:
            reasons = "; ".join(
                f"{r['hardware']} {r['precision']} {r['layout']}: {r['reason']}" for r in result.rows
            )
            best = {"feasible": False, "reason": f"no feasible candidate ({reasons})"}
        rows.append({**point, **best, "num_candidates": len(result.rows)})
    return rows
