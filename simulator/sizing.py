"""Fleet sizing: the fewest replicas of each candidate deployment that meet the SLO at the target load.

The search never touches simpy: it asks an injected :class:`Evaluator` "does a fleet of ``n`` replicas
meet the SLO at ``rate`` requests/s?" and receives a :class:`LoadVerdict`. The real evaluator simulates
the fleet with its router; tests use fakes whose answer is known.

Per candidate (:func:`size_candidate`):

1. :func:`max_rate_one_replica` - the highest arrival rate (requests/s) one replica sustains within the
   SLO, by a geometric search then bisection to a relative tolerance.
2. Estimate ``ceil(target / that rate)`` replicas (a random router splits Poisson traffic into Poisson
   streams, so one replica at ``target / n`` predicts a fleet of ``n``).
3. :func:`min_replicas` - verify the whole fleet at the target rate, starting from the estimate, and
   move (gallop then bisect) until the smallest passing count is found.

Invariant assumed by the search: meeting the SLO is monotone - non-increasing in rate for a fixed fleet,
non-decreasing in replicas for a fixed rate. With a noisy (simulated) verdict the answer is the boundary
between an observed failure and an observed pass, which stays within about one replica of the truth.

Rows and ranking (:func:`candidate_row`, :func:`rank`, :func:`compare_rows`) are plain dicts with
unit-suffixed keys (``SIZING_UNITS`` gives the unit of every numeric column) so that ``export`` and
``report`` can write and display them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from simulator.errors import InputError, NoFeasibleAnswer, unknown_name


@dataclass(frozen=True)
class LoadVerdict:
    """Outcome of simulating a fleet at one load.

    ``meets_slo`` is True iff p99 TTFT and p99 TPOT are within their limits and the fleet is not
    saturated (queues not growing without bound). Latencies in s, throughput in output tokens/s
    (whole fleet), utilisation as a fraction in [0, 1]. ``extra`` carries anything else the evaluator
    wants copied into the sizing table (e.g. ``kv_occupancy_frac``); its keys should carry units.
    """

    meets_slo: bool
    saturated: bool
    ttft_p99_s: float
    tpot_p99_s: float
    output_tokens_per_s: float
    utilisation_frac: float
    extra: dict[str, Any] = field(default_factory=dict)


class Evaluator(Protocol):
    """Judges a fleet of ``num_replicas`` replicas at an arrival rate of ``rate_per_s`` requests/s."""

    def evaluate(self, num_replicas: int, rate_per_s: float) -> LoadVerdict: ...


def passes(verdict: LoadVerdict) -> bool:
    """A saturated fleet never passes, whatever its (finite-run) percentiles say."""
    return verdict.meets_slo and not verdict.saturated


class CachedEvaluator:
    """Wraps an evaluator: memoises verdicts by (replicas, rate) and counts the distinct evaluations.

    ``verdicts`` keeps every verdict in call order, so the single-replica search doubles as a
    throughput-versus-load trace (see :func:`interactivity_curve`).
    """

    def __init__(self, inner: Evaluator) -> None:
        self._inner = inner
        self.verdicts: dict[tuple[int, float], LoadVerdict] = {}

    @property
    def num_evaluations(self) -> int:
        """How many times the wrapped evaluator was called."""
        return len(self.verdicts)

    def evaluate(self, num_replicas: int, rate_per_s: float) -> LoadVerdict:
        key = (num_replicas, rate_per_s)
        if key not in self.verdicts:
            self.verdicts[key] = self._inner.evaluate(num_replicas, rate_per_s)
        return self.verdicts[key]


def max_rate_one_replica(
    evaluator: Evaluator,
    *,
    rate_hi_per_s: float,
    rel_tol: float = 0.02,
    min_rate_per_s: float,
    rate_guess_per_s: float | None = None,
    bracket_factor: float | None = None,
) -> tuple[float, LoadVerdict | None]:
    """Highest arrival rate (requests/s) at which one replica meets the SLO, within ``rel_tol``.

    Checks ``min_rate_per_s`` first (returns ``(0.0, None)`` if even that fails), then gallops
    geometrically (x2) from ``rate_guess_per_s`` (default: the minimum rate) up to ``rate_hi_per_s``
    and bisects geometrically between the last pass and the first failure until
    ``fail / pass <= 1 + rel_tol``. Returns the last passing rate (a lower bound on the true limit,
    never above ``rate_hi_per_s``) and its verdict. ``rate_guess_per_s`` (e.g. an analytic estimate)
    only saves evaluations; the answer does not depend on it. ``bracket_factor`` (> 1, for a guess
    known to be close, e.g. from a neighbouring answer) gallops by that factor instead of x2 (squaring it
    at each further step), also downwards from a failing guess: a tight bracket costs a few evaluations.
    """
    if not (0 < min_rate_per_s < rate_hi_per_s):
        raise InputError(
            f"single-replica search needs 0 < min rate ({min_rate_per_s} req/s) < max rate "
            f"({rate_hi_per_s} req/s)"
        )
    if rel_tol <= 0:
        raise InputError(f"rel_tol must be > 0, got {rel_tol}")
    if bracket_factor is not None and bracket_factor <= 1.0:
        raise InputError(f"bracket_factor must be > 1, got {bracket_factor}")
    step = bracket_factor or 2.0
    lo_verdict = evaluator.evaluate(1, min_rate_per_s)
    if not passes(lo_verdict):
        return 0.0, None
    lo, hi = min_rate_per_s, rate_hi_per_s
    hi_known_fail = False
    probe = min_rate_per_s
    if rate_guess_per_s is not None:
        probe = min(max(rate_guess_per_s, min_rate_per_s), rate_hi_per_s)
        if probe > lo:
            verdict = evaluator.evaluate(1, probe)
            if passes(verdict):
                lo, lo_verdict = probe, verdict
                if lo >= rate_hi_per_s:
                    return lo, lo_verdict
            else:
                hi, hi_known_fail = probe, True
                while bracket_factor is not None and hi / step > lo:  # walk down to a pass
                    verdict = evaluator.evaluate(1, hi / step)
                    if passes(verdict):
                        lo, lo_verdict = hi / step, verdict
                        break
                    hi = hi / step
                    step *= step
                step = bracket_factor or 2.0
    # Geometric phase: grow while passing (only if the failure boundary is still unknown).
    while not hi_known_fail:
        probe = min(lo * step, rate_hi_per_s)
        verdict = evaluator.evaluate(1, probe)
        if passes(verdict):
            lo, lo_verdict = probe, verdict
            if probe >= rate_hi_per_s:
                return lo, lo_verdict
            if bracket_factor is not None:
                step *= step
        else:
            hi, hi_known_fail = probe, True
    # Bisection phase (geometric midpoint: the tolerance is relative).
    while hi / lo > 1.0 + rel_tol:
        mid = math.sqrt(lo * hi)
        verdict = evaluator.evaluate(1, mid)
        if passes(verdict):
            lo, lo_verdict = mid, verdict
        else:
            hi = mid
    return lo, lo_verdict


def min_replicas(
    evaluator: Evaluator, *, rate_per_s: float, start: int, max_replicas: int, at_least_start: bool = False
) -> tuple[int, LoadVerdict]:
    """Smallest replica count meeting the SLO at ``rate_per_s`` requests/s, and its verdict.

    Starts at ``start`` (clamped to [1, max_replicas]). If it fails, gallops upward (start+1, +2, +4,
    ..., capped at ``max_replicas``) to the first pass; if it passes, gallops downward (start-1, -2,
    -4, ..., floored at 1) to the first failure; then bisects between the failing and passing counts.
    Evaluations: 2 when the estimate is exact, O(log |answer - start|) otherwise. Assumes the verdict
    is monotone in replicas. Raises ``NoFeasibleAnswer`` if ``max_replicas`` replicas still fail.
    ``at_least_start``: search only counts >= ``start`` (the smallest passing one; ``start`` itself, in one
    evaluation, when it passes), for a start known to be at most a replica or so above the answer.
    """
    if max_replicas < 1:
        raise InputError(f"max_replicas must be >= 1, got {max_replicas}")
    if rate_per_s <= 0:
        raise InputError(f"target rate must be > 0 req/s, got {rate_per_s}")
    start = min(max(start, 1), max_replicas)
    verdict = evaluator.evaluate(start, rate_per_s)
    if passes(verdict):
        hi, hi_verdict = start, verdict
        lo = 0  # 0 replicas always fail
        step = 1
        while hi > 1 and not at_least_start:
            probe = max(start - step, 1)
            verdict = evaluator.evaluate(probe, rate_per_s)
            if not passes(verdict):
                lo = probe
                break
            hi, hi_verdict = probe, verdict
            step *= 2
    else:
        lo = start
        step = 1
        while True:
            if lo >= max_replicas:
                raise NoFeasibleAnswer(
                    f"{max_replicas} replicas still miss the SLO at {rate_per_s:.4g} req/s "
                    f"(p99 TTFT {verdict.ttft_p99_s:.4g} s, p99 TPOT {verdict.tpot_p99_s:.4g} s"
                    f"{', saturated' if verdict.saturated else ''})"
                )
            probe = min(start + step, max_replicas)
            verdict = evaluator.evaluate(probe, rate_per_s)
            if passes(verdict):
                hi, hi_verdict = probe, verdict
                break
            lo = probe
            step *= 2
    while hi - lo > 1 and not (at_least_start and lo == 0):
        mid = (lo + hi) // 2
        verdict = evaluator.evaluate(mid, rate_per_s)
        if passes(verdict):
            hi, hi_verdict = mid, verdict
        else:
            lo = mid
    return hi, hi_verdict


@dataclass(frozen=True)
class SizingOutcome:
    """Result of sizing one candidate.

    ``rate_per_replica_per_s``: highest arrival rate one replica sustains within the SLO (requests/s;
    0 if none). ``replicas``/``verdict``: the verified fleet at the target rate (``verdict`` is the
    failing single-replica or fleet verdict, or None, when infeasible). ``reason``: why the candidate
    cannot work (None when feasible). ``num_evaluations``: simulations run for this candidate.
    ``single_replica_verdicts``: (rate req/s, verdict) pairs visited by the single-replica search.
    """

    feasible: bool
    replicas: int
    rate_per_replica_per_s: float
    verdict: LoadVerdict | None
    reason: str | None
    num_evaluations: int
    estimated_replicas: int = 0
    single_replica_verdicts: tuple[tuple[float, LoadVerdict], ...] = ()


def size_candidate(
    evaluator: Evaluator,
    *,
    target_rate_per_s: float,
    rate_hi_per_s: float,
    max_replicas: int,
    min_rate_per_s: float,
    rel_tol: float = 0.02,
    rate_guess_per_s: float | None = None,
) -> SizingOutcome:
    """Size one candidate: single-replica search, estimate, then verify the fleet at the target rate.

    Never raises for an infeasible candidate: the outcome carries ``feasible=False`` and a one-line
    reason with the numbers (bad arguments still raise ``InputError``).
    """
    if target_rate_per_s <= 0:
        raise InputError(f"target rate must be > 0 req/s, got {target_rate_per_s}")
    cached = CachedEvaluator(evaluator)
    rate_1, _ = max_rate_one_replica(
        cached, rate_hi_per_s=rate_hi_per_s, rel_tol=rel_tol, min_rate_per_s=min_rate_per_s,
        rate_guess_per_s=rate_guess_per_s,
    )
    trace = tuple(sorted((rate, v) for (n, rate), v in cached.verdicts.items() if n == 1))
    if rate_1 <= 0:
        failed = cached.verdicts[(1, min_rate_per_s)]
        return SizingOutcome(
            feasible=False, replicas=0, rate_per_replica_per_s=0.0, verdict=failed,
            reason=(
                f"one replica misses the SLO even at {min_rate_per_s:.4g} req/s "
                f"(p99 TTFT {failed.ttft_p99_s:.4g} s, p99 TPOT {failed.tpot_p99_s:.4g} s"
                f"{', saturated' if failed.saturated else ''})"
            ),
            num_evaluations=cached.num_evaluations, single_replica_verdicts=trace,
        )
    estimate = math.ceil(target_rate_per_s / rate_1)
    try:
        replicas, verdict = min_replicas(
            cached, rate_per_s=target_rate_per_s, start=estimate, max_replicas=max_replicas
        )
    except NoFeasibleAnswer as exc:
        return SizingOutcome(
            feasible=False, replicas=0, rate_per_replica_per_s=rate_1,
            verdict=cached.verdicts.get((max_replicas, target_rate_per_s)),
            reason=f"needs more than {max_replicas} replicas (one replica sustains {rate_1:.4g} req/s, "
            f"estimate {estimate}): {exc}",
            num_evaluations=cached.num_evaluations, estimated_replicas=estimate,
            single_replica_verdicts=trace,
        )
    return SizingOutcome(
        feasible=True, replicas=replicas, rate_per_replica_per_s=rate_1, verdict=verdict, reason=None,
        num_evaluations=cached.num_evaluations, estimated_replicas=estimate, single_replica_verdicts=trace,
    )


# Unit of every numeric column a sizing/compare row can carry (for export metadata and report headers).
SIZING_UNITS: dict[str, str] = {
    "rank": "count",
    "replicas": "count",
    "estimated_replicas": "count",
    "gpus": "count",
    "gpus_provisioned": "count",
    "nodes": "count",
    "spare_nodes": "count",
    "racks": "count",
    "target_rate_per_s": "requests/s",
    "rate_per_replica_per_s": "requests/s",
    "output_tokens_per_s": "tokens/s",
    "output_tokens_per_s_per_gpu": "tokens/s",
    "output_tokens_per_s_per_user": "tokens/s",
    "ttft_p99_s": "s",
    "tpot_p99_s": "s",
    "utilisation_frac": "fraction",
    "power_kw": "kW",
    "facility_power_kw": "kW",
    "usd_per_hour": "USD/h",
    "usd_per_million_output_tokens": "USD per million tokens",
    "num_evaluations": "count",
}

RATIO_KEYS: tuple[str, ...] = (
    "gpus", "output_tokens_per_s_per_gpu", "power_kw", "usd_per_hour", "usd_per_million_output_tokens",
)
COMPARE_UNITS: dict[str, str] = {**SIZING_UNITS, **{f"{k}_vs_baseline": "ratio" for k in RATIO_KEYS}}


def candidate_row(
    *,
    hardware: str,
    format: str,
    layout: str,
    outcome: SizingOutcome,
    target_rate_per_s: float,
    packaging: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One sizing-table row from a candidate's outcome and its packaging (``Packaging.to_dict()``).

    Throughput per GPU divides the fleet's achieved output tokens/s by ``packaging["gpus"]``.
    ``verdict.extra`` is merged in last-but-packaging (its keys must not clash with the standard ones).
    """
    v = outcome.verdict if outcome.feasible else None
    row: dict[str, Any] = {
        "hardware": hardware, "format": format, "layout": layout,
        "feasible": outcome.feasible, "reason": outcome.reason,
        "replicas": outcome.replicas if outcome.feasible else None,
        "target_rate_per_s": target_rate_per_s,
        "rate_per_replica_per_s": outcome.rate_per_replica_per_s,
        "output_tokens_per_s": v.output_tokens_per_s if v else None,
        "output_tokens_per_s_per_gpu": None,
        "ttft_p99_s": v.ttft_p99_s if v else None,
        "tpot_p99_s": v.tpot_p99_s if v else None,
        "utilisation_frac": v.utilisation_frac if v else None,
        "num_evaluations": outcome.num_evaluations,
    }
    if v:
        row.update({k: val for k, val in v.extra.items() if k not in row})
    if packaging is not None and outcome.feasible:
        row.update(packaging)
        gpus = packaging.get("gpus")
        if v and gpus:
            row["output_tokens_per_s_per_gpu"] = v.output_tokens_per_s / gpus
    return row


def _num(value: Any) -> float:
    return math.inf if value is None else float(value)


def rank(rows: list[dict[str, Any]], by_cost: bool) -> list[dict[str, Any]]:
    """Feasible rows first (by ``gpus``, or by ``usd_per_hour`` when ``by_cost``), infeasible after.

    Ties break on the other key, then on higher tokens/s per GPU, then by name (deterministic).
    Returns new dicts with a ``rank`` key (1-based; None for infeasible rows, which keep their
    ``reason`` and input order). A missing cost sorts last among feasible rows.
    """
    feasible = [r for r in rows if r.get("feasible")]
    infeasible = [r for r in rows if not r.get("feasible")]

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        gpus, cost = _num(r.get("gpus")), _num(r.get("usd_per_hour"))
        primary = (cost, gpus) if by_cost else (gpus, cost)
        per_gpu = r.get("output_tokens_per_s_per_gpu")
        return (*primary, -(per_gpu or 0.0), str(r.get("hardware")), str(r.get("format")),
                str(r.get("layout")))

    ranked = [{**r, "rank": i} for i, r in enumerate(sorted(feasible, key=key), start=1)]
    return ranked + [{**r, "rank": None} for r in infeasible]


def compare_rows(
    rows: Sequence[dict[str, Any]], *, baseline: str, by_cost: bool = False
) -> list[dict[str, Any]]:
    """One row per hardware (its best candidate) with ratios to the baseline hardware's best.

    ``rows`` are candidate rows of several generations (ranked or not). Ratios ``<key>_vs_baseline``
    for ``RATIO_KEYS`` (None where either side is missing). A generation with no feasible candidate
    gets a row with ``feasible=False`` and the reasons of its candidates joined. Order: as ranked.
    Raises ``InputError`` if ``baseline`` is not among the rows' hardware.
    """
    hardware_order = list(dict.fromkeys(r["hardware"] for r in rows))
    if baseline not in hardware_order:
        raise unknown_name("baseline hardware", baseline, hardware_order)
    best: dict[str, dict[str, Any]] = {}
    for r in rank(list(rows), by_cost):
        if r["hardware"] not in best and r.get("feasible"):
            best[r["hardware"]] = dict(r)
    for hw in hardware_order:
        if hw not in best:
            reasons = "; ".join(
                f"{r.get('format')}/{r.get('layout')}: {r.get('reason')}" for r in rows if r["hardware"] == hw
            )
            best[hw] = {"hardware": hw, "feasible": False, "reason": reasons}
    base = best[baseline]
    out = []
    for r in rank(list(best.values()), by_cost):
        for k in RATIO_KEYS:
            num, den = r.get(k), base.get(k)
            r[f"{k}_vs_baseline"] = num / den if num is not None and den else None
        out.append(r)
    return out


def interactivity_curve(
    points: Sequence[tuple[float, LoadVerdict]], gpus_per_replica: int
) -> list[tuple[float, float]]:
    """(output tokens/s per user, output tokens/s per GPU) for the non-saturated verdicts of one replica.

    Per-user throughput is ``extra["output_tokens_per_s_per_user"]`` when the evaluator provides it,
    else ``1 / tpot_p99_s`` (a conservative per-user rate). Sorted by per-user throughput.
    """
    curve = []
    for _, v in points:
        if v.saturated or v.output_tokens_per_s <= 0:
            continue
        per_user = v.extra.get("output_tokens_per_s_per_user")
        if per_user is None:
            if not v.tpot_p99_s or v.tpot_p99_s <= 0 or not math.isfinite(v.tpot_p99_s):
                continue
            per_user = 1.0 / v.tpot_p99_s
        curve.append((float(per_user), v.output_tokens_per_s / gpus_per_replica))
    return sorted(curve)
