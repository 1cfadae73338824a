"""Sizing search against fake evaluators whose answers are known in closed form."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.errors import InputError, NoFeasibleAnswer
from simulator.sizing import (
    CachedEvaluator,
    LoadVerdict,
    candidate_row,
    compare_rows,
    interactivity_curve,
    max_rate_one_replica,
    min_replicas,
    rank,
    size_candidate,
)


class LinearFleet:
    """n replicas meet the SLO iff rate <= capacity * n (monotone); optional seeded multiplicative jitter."""

    def __init__(self, capacity_per_s: float, *, jitter_frac: float = 0.0, seed: int = 0) -> None:
        self.capacity_per_s = capacity_per_s
        self.jitter_frac = jitter_frac
        self.rng = np.random.default_rng(seed)
        self.calls: list[tuple[int, float]] = []

    def evaluate(self, num_replicas: int, rate_per_s: float) -> LoadVerdict:
        self.calls.append((num_replicas, rate_per_s))
        noise = 1.0 + self.jitter_frac * self.rng.uniform(-1.0, 1.0)
        load = rate_per_s / (self.capacity_per_s * num_replicas) * noise
        ok = load <= 1.0
        return LoadVerdict(
            meets_slo=ok, saturated=load > 1.2, ttft_p99_s=0.1 * load, tpot_p99_s=0.02 * load,
            output_tokens_per_s=rate_per_s * 200.0, utilisation_frac=min(load, 1.0),
            extra={"kv_occupancy_frac": min(load, 1.0)},
        )


def exact_min_replicas(rate_per_s: float, capacity_per_s: float) -> int:
    """Smallest n with rate <= capacity * n, computed exactly as the fake judges it."""
    n = max(1, math.floor(rate_per_s / capacity_per_s))
    while rate_per_s / (capacity_per_s * n) > 1.0:
        n += 1
    while n > 1 and rate_per_s / (capacity_per_s * (n - 1)) <= 1.0:
        n -= 1
    return n


@pytest.mark.parametrize("capacity", [0.37, 1.0, 3.3, 41.0])
@pytest.mark.parametrize("rel_tol", [0.02, 0.005])
def test_max_rate_one_replica_within_tolerance(capacity: float, rel_tol: float) -> None:
    fake = LinearFleet(capacity)
    rate, verdict = max_rate_one_replica(fake, rate_hi_per_s=1000.0, rel_tol=rel_tol, min_rate_per_s=0.01)
    assert verdict is not None and verdict.meets_slo
    assert rate <= capacity  # a passing rate is never above the true limit
    assert (capacity - rate) / capacity <= rel_tol
    # geometric + bisection: O(log(hi/min) + log(1/tol)) evaluations
    assert len(fake.calls) <= math.log2(1000.0 / 0.01) + math.log2(math.log(1e5) / rel_tol) + 4


def test_max_rate_guess_saves_evaluations_and_gives_same_answer() -> None:
    blind, guided = LinearFleet(7.0), LinearFleet(7.0)
    r_blind, _ = max_rate_one_replica(blind, rate_hi_per_s=1e4, min_rate_per_s=1e-3)
    r_guided, _ = max_rate_one_replica(guided, rate_hi_per_s=1e4, min_rate_per_s=1e-3, rate_guess_per_s=6.5)
    assert abs(r_blind - 7.0) / 7.0 <= 0.02 and abs(r_guided - 7.0) / 7.0 <= 0.02
    assert len(guided.calls) < len(blind.calls)
    # a guess above the limit also converges
    high = LinearFleet(7.0)
    r_high, _ = max_rate_one_replica(high, rate_hi_per_s=1e4, min_rate_per_s=1e-3, rate_guess_per_s=50.0)
    assert 7.0 / 1.02 <= r_high <= 7.0


@pytest.mark.parametrize("guess_frac", [0.5, 0.9, 0.99, 1.01, 1.1, 3.0])
def test_a_close_guess_with_a_bracket_factor_converges_in_few_evaluations(guess_frac: float) -> None:
    capacity, tol = 7.0, 0.02
    fake = LinearFleet(capacity)
    rate, verdict = max_rate_one_replica(fake, rate_hi_per_s=1e4, min_rate_per_s=1e-3, rel_tol=tol,
                                         rate_guess_per_s=guess_frac * capacity,
                                         bracket_factor=(1 + tol) ** 2)
    assert verdict is not None and capacity / (1 + tol) <= rate <= capacity  # the same answer as ever
    # min rate, the guess, a walk whose factor squares each step (up or down), then a short bisection
    steps = math.ceil(math.log2(max(abs(math.log(guess_frac)), math.log(1 + tol)) / math.log(1 + tol)))
    assert len(fake.calls) <= 2 + (steps + 1) + (steps + 2)
    if 0.9 <= guess_frac <= 1.1:
        blind = LinearFleet(capacity)
        max_rate_one_replica(blind, rate_hi_per_s=1e4, min_rate_per_s=1e-3, rel_tol=tol,
                             rate_guess_per_s=guess_frac * capacity)
        assert len(fake.calls) < len(blind.calls)
    with pytest.raises(InputError, match="bracket_factor"):
        max_rate_one_replica(fake, rate_hi_per_s=1e4, min_rate_per_s=1e-3, bracket_factor=1.0)


@pytest.mark.parametrize("offset", [-5, -1, 0, 1, 3])
def test_min_replicas_at_least_start_looks_only_upward(offset: int) -> None:
    answer = exact_min_replicas(87.0, 1.0)
    fake = LinearFleet(1.0)
    n, verdict = min_replicas(fake, rate_per_s=87.0, start=answer + offset, max_replicas=1000,
                              at_least_start=True)
    assert verdict.meets_slo and n == max(answer, answer + offset)  # the smallest passing count >= start
    assert min(c for c, _ in fake.calls) == answer + offset
    if offset >= 0:
        assert len(fake.calls) == 1  # a passing start settles it in one fleet run


def test_max_rate_capped_at_rate_hi_and_zero_when_min_fails() -> None:
    rate, verdict = max_rate_one_replica(LinearFleet(100.0), rate_hi_per_s=10.0, min_rate_per_s=0.1)
    assert rate == 10.0 and verdict is not None
    assert max_rate_one_replica(LinearFleet(0.05), rate_hi_per_s=10.0, min_rate_per_s=0.1) == (0.0, None)
    with pytest.raises(InputError):
        max_rate_one_replica(LinearFleet(1.0), rate_hi_per_s=0.1, min_rate_per_s=1.0)


@pytest.mark.parametrize("capacity,rate", [(1.0, 87.0), (0.7, 1000.0), (3.0, 2.0), (2.5, 250.0)])
@pytest.mark.parametrize("offset", [-50, -3, -1, 0, 1, 2, 40])
def test_min_replicas_exact_from_any_start(capacity: float, rate: float, offset: int) -> None:
    answer = exact_min_replicas(rate, capacity)
    fake = LinearFleet(capacity)
    n, verdict = min_replicas(fake, rate_per_s=rate, start=answer + offset, max_replicas=100_000)
    assert n == answer
    assert verdict.meets_slo
    distance = max(abs(offset), 1)
    assert len(fake.calls) <= 2 * math.ceil(math.log2(distance + 1)) + 3


def test_min_replicas_exact_estimate_costs_two_evaluations() -> None:
    fake = LinearFleet(1.0)
    assert min_replicas(fake, rate_per_s=87.0, start=87, max_replicas=1000)[0] == 87
    assert sorted(n for n, _ in fake.calls) == [86, 87]


def test_min_replicas_evaluations_logarithmic_from_far_below() -> None:
    fake = LinearFleet(1.0)
    n, _ = min_replicas(fake, rate_per_s=10_000.0, start=1, max_replicas=1_000_000)
    assert n == 10_000
    assert len(fake.calls) <= 2 * math.log2(10_000) + 3
    assert len(set(fake.calls)) == len(fake.calls)  # never re-evaluates the same count


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.floats(0.05, 50.0),
    rate=st.floats(0.1, 5000.0),
    start=st.integers(1, 20_000),
)
def test_min_replicas_property(capacity: float, rate: float, start: int) -> None:
    answer = exact_min_replicas(rate, capacity)
    n, _ = min_replicas(LinearFleet(capacity), rate_per_s=rate, start=start, max_replicas=10**9)
    assert n == answer


def test_min_replicas_infeasible_raises_with_numbers() -> None:
    with pytest.raises(NoFeasibleAnswer, match="50 replicas still miss"):
        min_replicas(LinearFleet(1.0), rate_per_s=87.0, start=10, max_replicas=50)
    with pytest.raises(NoFeasibleAnswer):
        min_replicas(LinearFleet(1.0), rate_per_s=87.0, start=500, max_replicas=50)  # start clamped
    assert min_replicas(LinearFleet(1.0), rate_per_s=87.0, start=500, max_replicas=87)[0] == 87


def test_size_candidate_feasible() -> None:
    fake = LinearFleet(2.0)
    out = size_candidate(fake, target_rate_per_s=173.0, rate_hi_per_s=1e3, max_replicas=10_000,
                         min_rate_per_s=1e-2)
    assert out.feasible and out.reason is None
    assert out.replicas == exact_min_replicas(173.0, 2.0) == 87
    assert abs(out.rate_per_replica_per_s - 2.0) / 2.0 <= 0.02
    assert out.num_evaluations == len(set(fake.calls))
    assert out.verdict is not None and out.verdict.meets_slo
    assert out.single_replica_verdicts and all(r > 0 for r, _ in out.single_replica_verdicts)


def test_size_candidate_infeasible_reasons() -> None:
    slow = size_candidate(LinearFleet(0.001), target_rate_per_s=10.0, rate_hi_per_s=100.0, max_replicas=100,
                          min_rate_per_s=0.01)
    assert not slow.feasible and slow.replicas == 0
    assert slow.reason is not None and "even at 0.01 req/s" in slow.reason
    big = size_candidate(LinearFleet(1.0), target_rate_per_s=500.0, rate_hi_per_s=100.0, max_replicas=100,
                         min_rate_per_s=0.01)
    assert not big.feasible and big.reason is not None
    assert "more than 100 replicas" in big.reason and "\n" not in big.reason


@pytest.mark.parametrize("seed", range(8))
def test_noisy_evaluator_lands_within_one_replica(seed: int) -> None:
    capacity, target = 1.3, 240.0
    answer = exact_min_replicas(target, capacity)
    fake = LinearFleet(capacity, jitter_frac=0.005, seed=seed)
    out = size_candidate(fake, target_rate_per_s=target, rate_hi_per_s=1e3, max_replicas=10_000,
                         min_rate_per_s=0.01)
    assert out.feasible
    assert abs(out.replicas - answer) <= 1


def test_cached_evaluator_memoises() -> None:
    fake = LinearFleet(1.0)
    cached = CachedEvaluator(fake)
    for _ in range(3):
        cached.evaluate(4, 2.0)
    assert cached.num_evaluations == 1 and len(fake.calls) == 1


def _row(hw: str, fmt: str, gpus: int | None, usd: float | None, feasible: bool = True) -> dict:
    return {"hardware": hw, "format": fmt, "layout": "tp1", "feasible": feasible, "gpus": gpus,
            "usd_per_hour": usd, "reason": None if feasible else "does not fit",
            "output_tokens_per_s_per_gpu": 1000.0 / gpus if gpus else None, "power_kw": gpus,
            "usd_per_million_output_tokens": usd}


def test_rank_by_gpus_and_by_cost() -> None:
    rows = [_row("a", "fp8", 16, 40.0), _row("b", "fp8", None, None, feasible=False),
            _row("c", "fp4", 8, 60.0), _row("d", "bf16", 24, 30.0)]
    by_gpus = rank(rows, by_cost=False)
    assert [r["hardware"] for r in by_gpus] == ["c", "a", "d", "b"]
    assert [r["rank"] for r in by_gpus] == [1, 2, 3, None]
    assert by_gpus[-1]["reason"] == "does not fit"
    assert [r["hardware"] for r in rank(rows, by_cost=True)] == ["d", "a", "c", "b"]
    assert "rank" not in rows[0]  # inputs untouched


def test_compare_rows_ratios_to_baseline() -> None:
    rows = [_row("h100", "fp8", 32, 80.0), _row("h100", "bf16", 64, 160.0),
            _row("b200", "fp4", 8, 40.0), _row("mi300x", "fp8", None, None, feasible=False)]
    out = compare_rows(rows, baseline="h100")
    by_hw = {r["hardware"]: r for r in out}
    assert set(by_hw) == {"h100", "b200", "mi300x"}
    assert by_hw["h100"]["format"] == "fp8" and by_hw["h100"]["gpus_vs_baseline"] == 1.0
    assert by_hw["b200"]["gpus_vs_baseline"] == pytest.approx(8 / 32)
    assert by_hw["b200"]["output_tokens_per_s_per_gpu_vs_baseline"] == pytest.approx(4.0)
    assert not by_hw["mi300x"]["feasible"] and "does not fit" in by_hw["mi300x"]["reason"]
    assert by_hw["mi300x"]["gpus_vs_baseline"] is None
    with pytest.raises(InputError, match="h100"):
        compare_rows(rows, baseline="h10")


def test_candidate_row_and_curve() -> None:
    out = size_candidate(LinearFleet(2.0), target_rate_per_s=10.0, rate_hi_per_s=100.0, max_replicas=100,
                         min_rate_per_s=0.01)
    row = candidate_row(hardware="h100", format="fp8", layout="tp2", outcome=out, target_rate_per_s=10.0,
                        packaging={"gpus": out.replicas * 2, "power_kw": 1.0})
    assert row["replicas"] == 5 and row["gpus"] == 10
    assert row["output_tokens_per_s_per_gpu"] == pytest.approx(out.verdict.output_tokens_per_s / 10)
    assert "kv_occupancy_frac" in row
    curve = interactivity_curve(out.single_replica_verdicts, gpus_per_replica=2)
    assert curve and all(x > 0 and y > 0 for x, y in curve)
    assert [x for x, _ in curve] == sorted(x for x, _ in curve)


class SaturatedAbove:
    """Reports meets_slo=True everywhere but saturated above 5 req/s per replica."""

    def evaluate(self, num_replicas: int, rate_per_s: float) -> LoadVerdict:
        sat = rate_per_s / num_replicas > 5.0
        return LoadVerdict(meets_slo=True, saturated=sat, ttft_p99_s=0.1, tpot_p99_s=0.01,
                           output_tokens_per_s=rate_per_s, utilisation_frac=0.5)


def test_saturated_verdict_never_passes() -> None:
    rate, _ = max_rate_one_replica(SaturatedAbove(), rate_hi_per_s=100.0, min_rate_per_s=0.1)
    assert 5.0 / 1.02 <= rate <= 5.0
    assert min_replicas(SaturatedAbove(), rate_per_s=52.0, start=1, max_replicas=100)[0] == 11


def test_guess_at_rate_hi_returns_without_more_evaluations() -> None:
    fake = LinearFleet(100.0)
    rate, _ = max_rate_one_replica(fake, rate_hi_per_s=10.0, min_rate_per_s=0.1, rate_guess_per_s=20.0)
    assert rate == 10.0 and len(fake.calls) == 2


@pytest.mark.parametrize("offset", range(-12, 9))
def test_pair_scan_then_gallop_finds_the_smallest_passing_fleet(monkeypatch: pytest.MonkeyPatch,
                                                                 offset: int) -> None:
    """Scanning from the estimate two fleets at a time (down while both pass, up while both fail), then
    galloping from where the scan stopped, finds the smallest passing fleet wherever it lies; when it is
    within 4 replicas of the estimate the parallel rounds alone find it, with no sequential run."""
    from simulator import candidate_search

    capacity, start = 40.0, 83
    answer = start + offset
    rate = capacity * (answer - 0.5)
    assert exact_min_replicas(rate, capacity) == answer
    truth = LinearFleet(capacity)

    def fake_prefetch(sc, found, counts, cache, pair, message) -> None:  # the two fleets of a round
        for n in pair:
            cache.verdicts[(n, rate)] = truth.evaluate(n, rate)
            counts[0] += 1

    class Target:
        @staticmethod
        def target_rate_per_s() -> float:
            return rate

    monkeypatch.setattr(candidate_search, "_prefetch", fake_prefetch)
    sequential = LinearFleet(capacity)
    cache, counts = CachedEvaluator(sequential), [0]
    begin = candidate_search._scan_in_pairs(Target(), SimpleNamespace(cap=1000), counts, cache, start, None)
    found, _ = min_replicas(cache, rate_per_s=rate, start=begin, max_replicas=1000)
    assert found == answer
    assert counts[0] <= 2 * candidate_search.PAIR_ROUNDS
    if -4 <= offset <= 4:
        assert sequential.calls == []


def test_pair_scan_up_stops_at_the_replica_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan up from a failing estimate never simulates fleets above the cap; the search then reports
    the candidate infeasible."""
    from simulator import candidate_search

    capacity, start, cap = 40.0, 83, 86
    rate = capacity * 99.5  # needs 100 replicas
    simulated: list[int] = []

    def fake_prefetch(sc, found, counts, cache, pair, message) -> None:
        for n in pair:
            simulated.append(n)
            cache.verdicts[(n, rate)] = LinearFleet(capacity).evaluate(n, rate)

    class Target:
        @staticmethod
        def target_rate_per_s() -> float:
            return rate

    monkeypatch.setattr(candidate_search, "_prefetch", fake_prefetch)
    cache = CachedEvaluator(LinearFleet(capacity))
    begin = candidate_search._scan_in_pairs(Target(), SimpleNamespace(cap=cap), [0], cache, start, None)
    assert max(simulated) <= cap and begin <= cap
    with pytest.raises(NoFeasibleAnswer):
        min_replicas(cache, rate_per_s=rate, start=begin, max_replicas=cap)
