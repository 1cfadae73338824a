"""Metrics: exact values on hand-built records, MLPerf throughput definitions, saturation on synthetic
queues, and confidence-interval coverage on known distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.errors import InputError
from simulator.metrics import (
    COMBINED_KEYS,
    RequestRecords,
    Slo,
    combine_replications,
    detect_saturation,
    mean_estimate,
    quantile_estimate,
    queue_delay_growth,
    summarize,
    t_quantile_975,
)

NAN = math.nan


def _records(arrival, first, finish, output, inputs=None, preemptions=None, scheduled=None) -> RequestRecords:
    n = len(arrival)
    return RequestRecords(
        arrival_at_s=np.asarray(arrival, dtype=float),
        first_token_at_s=np.asarray(first, dtype=float),
        finish_at_s=np.asarray(finish, dtype=float),
        input_tokens=np.asarray(inputs or [10] * n),
        output_tokens=np.asarray(output),
        preemptions=np.asarray(preemptions or [0] * n),
        replica=np.zeros(n, dtype=int),
        scheduled_at_s=None if scheduled is None else np.asarray(scheduled, float),
    )


def _mm1(rate_per_s: float, service_rate_per_s: float, duration_s: float,
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival, service start, service time) of an M/M/1 FIFO queue whose arrivals stop at duration_s."""
    arrival = np.sort(rng.uniform(0.0, duration_s, rng.poisson(rate_per_s * duration_s)))
    service = rng.exponential(1.0 / service_rate_per_s, len(arrival))
    start = np.empty(len(arrival))
    free_at = 0.0
    for i, (a, s) in enumerate(zip(arrival, service, strict=True)):
        start[i] = max(free_at, a)
        free_at = start[i] + s
    return arrival, start, service


def _fifo_queue(rate_per_s: float, service_rate_per_s: float, duration_s: float, seed: int) -> RequestRecords:
    """M/M/1 FIFO records; requests not finished by duration_s are unfinished (NaN)."""
    rng = np.random.default_rng(seed)
    arrival, start, service = _mm1(rate_per_s, service_rate_per_s, duration_s, rng)
    finish = start + service
    first = finish - 0.5 * service
    output = rng.integers(1, 50, len(arrival))
    return _records(
        arrival,
        np.where(first <= duration_s, first, NAN),
        np.where(finish <= duration_s, finish, NAN),
        output,
    )


def test_latencies_and_tpot_on_hand_built_records() -> None:
    records = _records(
        arrival=[0.0, 1.0, 2.0, 3.0],
        first=[0.5, 1.2, 2.1, 3.4],
        finish=[2.5, 3.2, 2.1, 4.4],
        output=[5, 11, 1, 3],
        scheduled=[0.1, 1.0, 2.0, 3.2],
    )
    summary = summarize(records, warmup_s=0.0, end_at_s=10.0, offline=False)
    d = summary.to_dict()
    assert d["num_ttft_samples"] == 4 and d["ttft_mean_s"] == pytest.approx((0.5 + 0.2 + 0.1 + 0.4) / 4)
    assert d["ttft_p50_s"] == pytest.approx(np.quantile([0.5, 0.2, 0.1, 0.4], 0.5))
    # TPOT = (e2e - ttft) / (n - 1); the 1-token request has none
    tpots = [2.0 / 4, 2.0 / 10, 1.0 / 2]
    assert d["num_tpot_samples"] == 3 and d["tpot_mean_s"] == pytest.approx(np.mean(tpots))
    assert d["tpot_p90_s"] == pytest.approx(np.quantile(tpots, 0.9))
    assert d["e2e_p99_s"] == pytest.approx(np.quantile([2.5, 2.2, 0.1, 1.4], 0.99))
    assert d["queue_delay_mean_s"] == pytest.approx((0.1 + 0 + 0 + 0.2) / 4)
    assert d["completed_requests"] == 4 and d["arrived_requests"] == 4 and not d["saturated"]


def test_warmup_requests_are_excluded_from_latency() -> None:
    records = _records(
        arrival=[0.0, 5.0, 6.0], first=[50.0, 5.1, 6.3], finish=[60.0, 5.5, 6.5], output=[2, 2, 2]
    )
    d = summarize(records, warmup_s=4.0, end_at_s=70.0, offline=False).to_dict()
    assert d["num_ttft_samples"] == 2 and d["ttft_mean_s"] == pytest.approx(0.2)
    assert d["measured_requests"] == 2 and d["arrived_requests"] == 3


def test_mlperf_throughput_definitions() -> None:
    offline = _records(
        arrival=[0, 0, 0], first=[1, 1, 2], finish=[2, 4, 5], output=[10, 20, 30], inputs=[1, 2, 3]
    )
    d = summarize(offline, warmup_s=0.0, end_at_s=5.0, offline=True).to_dict()
    assert d["output_tokens_per_s"] == pytest.approx(60 / 5)  # all output tokens / last completion
    assert d["total_tokens_per_s"] == pytest.approx(66 / 5)
    server = _records(
        arrival=[1, 2, 3, 4], first=[1.5, 2.5, 3.5, 4.5], finish=[3, 5, 11, NAN], output=[10, 20, 30, 40]
    )
    d = summarize(server, warmup_s=2.0, end_at_s=12.0, offline=False).to_dict()
    assert d["output_tokens_per_s"] == pytest.approx(60 / (11 - 1))  # completed tokens / last completion
    assert d["steady_output_tokens_per_s"] == pytest.approx(60 / 10)  # completions in [2, 12]
    assert d["completed_requests"] == 3


def test_slo_goodput_and_attainment() -> None:
    records = _records(
        arrival=[0, 1, 2, 3], first=[0.1, 1.5, 2.1, 3.1], finish=[1.1, 2.5, 2.2, 8.1], output=[11, 11, 1, 11]
    )
    d = summarize(
        records, warmup_s=0.0, end_at_s=10.0, offline=False, slo=Slo(ttft_p99_s=0.2, tpot_p99_s=0.2)
    ).to_dict()
    # request 1 fails TTFT, request 3 fails TPOT (0.5 s), the 1-token request passes
    assert d["slo_attainment_frac"] == pytest.approx(0.5) and d["goodput_requests_per_s"] == pytest.approx(
        0.2
    )
    assert d["slo_met"] is False
    no_slo = summarize(records, warmup_s=0.0, end_at_s=10.0, offline=False).to_dict()
    assert no_slo["slo_met"] is None and math.isnan(no_slo["goodput_requests_per_s"])


def test_time_weighted_kv_queue_and_utilisation() -> None:
    records = _records(arrival=[0.0], first=[0.1], finish=[0.2], output=[2], preemptions=[3])
    d = summarize(
        records,
        warmup_s=0.0,
        end_at_s=20.0,
        offline=False,
        busy_s=10.0,
        num_replicas=2,
        kv_samples=(np.array([0.0, 10.0]), np.array([0.0, 1.0])),
        queue_samples=(np.array([0.0, 5.0, 15.0]), np.array([0.0, 4.0, 0.0])),
    ).to_dict()
    assert d["kv_occupancy_mean_frac"] == pytest.approx(0.5)
    assert d["num_waiting_mean"] == pytest.approx(4.0 * 10 / 20)
    assert d["utilisation_frac"] == pytest.approx(10.0 / (2 * 20.0)) and d["preemptions"] == 3


def test_saturation_detected_on_growing_queue_not_on_stable_one() -> None:
    for seed in range(10):
        overloaded = summarize(
            _fifo_queue(10.0, 8.0, 600.0, seed),
            warmup_s=100.0,
            end_at_s=600.0,
            offline=False,
            slo=Slo(ttft_p99_s=100.0, tpot_p99_s=100.0),
        )
        assert overloaded.saturated and overloaded.saturation_reason
        assert math.isnan(overloaded.ttft_s.p99.value) and overloaded.slo_met is False
        assert overloaded.output_tokens_per_s > 0  # throughput (the capacity) is still reported
        stable = summarize(
            _fifo_queue(10.0, 11.0, 600.0, seed), warmup_s=100.0, end_at_s=600.0, offline=False
        )
        assert not stable.saturated and stable.saturation_reason == ""
        assert math.isfinite(stable.ttft_s.p99.value)


def test_saturation_from_queue_samples() -> None:
    rng = np.random.default_rng(0)
    times = np.arange(0.0, 600.0, 1.0)
    stable = _fifo_queue(5.0, 10.0, 600.0, 1)
    growing = np.maximum(0.0, 0.5 * times + rng.normal(0, 20, len(times)))
    noisy = np.maximum(0.0, 20 + rng.normal(0, 15, len(times)))
    assert detect_saturation(stable, warmup_s=60.0, end_at_s=600.0, queue_samples=(times, growing))[0]
    assert not detect_saturation(stable, warmup_s=60.0, end_at_s=600.0, queue_samples=(times, noisy))[0]


def test_saturation_from_unfinished_backlog() -> None:
    # everything after t=10 is stuck: a stalled system, no trend needed to see it
    arrival = np.linspace(0.0, 100.0, 1001)
    finish = np.where(arrival < 10.0, arrival + 0.1, NAN)
    records = _records(arrival, finish - 0.05, finish, np.full(1001, 5))
    saturated, reason = detect_saturation(records, warmup_s=5.0, end_at_s=100.0)
    assert saturated and reason


def test_offline_is_never_flagged() -> None:
    records = _records(
        arrival=np.zeros(100),
        first=np.linspace(1, 50, 100),
        finish=np.linspace(2, 100, 100),
        output=np.full(100, 10),
    )
    assert not summarize(records, warmup_s=0.0, end_at_s=100.0, offline=True).saturated


def test_quantile_and_mean_ci_coverage() -> None:
    true_p90, true_p50, true_mean = math.log(10.0), math.log(2.0), 1.0
    hits = {"p90": 0, "p50": 0, "mean": 0}
    for seed in range(100):
        x = np.random.default_rng(seed).exponential(1.0, 400)
        p90, p50, mean = quantile_estimate(x, 0.9), quantile_estimate(x, 0.5), mean_estimate(x)
        hits["p90"] += p90.ci_low <= true_p90 <= p90.ci_high
        hits["p50"] += p50.ci_low <= true_p50 <= p50.ci_high
        hits["mean"] += mean.ci_low <= true_mean <= mean.ci_high
    assert hits["p90"] >= 88 and hits["p50"] >= 88 and hits["mean"] >= 88, hits
    assert hits["p90"] < 100 or hits["p50"] < 100  # intervals are not vacuously wide


def test_quantile_ci_undefined_for_tiny_samples() -> None:
    estimate = quantile_estimate(np.arange(20.0), 0.99)
    assert math.isnan(estimate.ci_high) and estimate.ci_low <= estimate.value
    assert math.isnan(quantile_estimate(np.array([]), 0.5).value)


def test_combine_replications_t_interval_coverage() -> None:
    hits = 0
    for trial in range(100):
        summaries = []
        for rep in range(3):  # few replications: a z interval instead of t would cover only ~81%
            rng = np.random.default_rng(1000 * trial + rep)
            arrival = np.sort(rng.uniform(0, 100, 50))
            ttft = rng.exponential(1.0, 50)
            summaries.append(
                summarize(
                    _records(arrival, arrival + ttft, arrival + ttft + 1.0, np.full(50, 2)),
                    warmup_s=0.0,
                    end_at_s=200.0,
                    offline=False,
                )
            )
        combined = combine_replications(summaries)
        hits += combined["ttft_mean_ci_low_s"] <= 1.0 <= combined["ttft_mean_ci_high_s"]
    assert 88 <= hits <= 100
    assert set(COMBINED_KEYS) <= set(combined) and combined["num_replications"] == 3
    assert not combined["saturated"] and combined["saturated_replications"] == 0


def test_t_quantiles() -> None:
    assert t_quantile_975(1) == pytest.approx(12.706)
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=1e-3)
    assert t_quantile_975(10_000) == pytest.approx(1.96, abs=1e-3)


def test_to_dict_keys_and_window_validation() -> None:
    records = _records(arrival=[0.0], first=[0.1], finish=[0.2], output=[2])
    d = summarize(records, warmup_s=0.0, end_at_s=1.0, offline=False).to_dict()
    for key in (
        "ttft_p99_s",
        "ttft_p99_ci_low_s",
        "tpot_p50_ci_high_s",
        "e2e_mean_s",
        "queue_delay_p90_s",
        "output_tokens_per_s",
        "steady_output_tokens_per_s",
        "total_tokens_per_s",
        "completed_requests",
        "arrived_requests",
        "goodput_requests_per_s",
        "slo_attainment_frac",
        "utilisation_frac",
        "kv_occupancy_mean_frac",
        "preemptions",
        "saturated",
        "saturation_reason",
    ):
        assert key in d
    with pytest.raises(InputError):
        summarize(records, warmup_s=5.0, end_at_s=5.0, offline=False)


def _infinite_server(rate_per_s: float, end_s: float, sojourn, seed: int) -> RequestRecords:
    """M/G/inf: Poisson arrivals, nobody waits, each request stays ``sojourn(arrival, rng)`` seconds."""
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate_per_s, int(rate_per_s * end_s * 1.2)))
    arrival = arrival[arrival < end_s]
    finish = arrival + sojourn(arrival, rng)
    return _records(arrival, arrival + 0.01, finish, np.full(len(arrival), 100))


def test_heavy_tailed_fill_up_is_not_saturation() -> None:
    """A stable M/G/inf system with long, heavy-tailed lives (lognormal, mean 200 s, cv 2) keeps filling
    up long after a warm-up of a few mean lives: the number in the system rises, but nothing is overloaded.
    The trend test must not call that saturation (batches narrower than the correlation time did)."""
    sigma = math.sqrt(math.log(1.0 + 2.0**2))

    def lives(arrival: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.lognormal(math.log(200.0) - sigma**2 / 2, sigma, len(arrival))

    flagged = [
        detect_saturation(_infinite_server(2.5, 2000.0, lives, seed), warmup_s=600.0, end_at_s=2000.0)[0]
        for seed in range(20)
    ]
    assert sum(flagged) <= 1  # at most the trend test's own false-positive rate


def test_growing_lives_are_saturation() -> None:
    """Lives that lengthen with time (a batch that slows as it grows) make the backlog grow: flagged."""

    def lives(arrival: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.exponential(5.0, len(arrival)) + 0.05 * arrival

    for seed in range(5):
        saturated, reason = detect_saturation(
            _infinite_server(2.5, 2000.0, lives, seed), warmup_s=200.0, end_at_s=2000.0
        )
        assert saturated and "number in the system" in reason


def _drained_fifo(rate_per_s: float, service_rate_per_s: float, duration_s: float,
                  seed: int) -> RequestRecords:
    """M/M/1 FIFO records with every request served (the queue drains after the arrivals stop); the
    first token comes a tenth of the way through the service."""
    arrival, start, service = _mm1(rate_per_s, service_rate_per_s, duration_s, np.random.default_rng(seed))
    return _records(arrival, start + 0.1 * service, start + service, np.ones(len(arrival), dtype=int))


def test_queue_delay_growth_of_an_overloaded_fifo_queue_is_rho_minus_one() -> None:
    """An M/M/1 queue at rho = 10/9 builds (10 - 9) requests of queue per s, each served at 9/s: the
    waiting time grows at rho - 1 = 0.111 s per s. Over 20 seeds the estimate's mean is within 3
    standard errors of that; a stable queue (rho = 0.8) shows no growth worth a second over 600 s."""
    growth = [queue_delay_growth(_drained_fifo(10.0, 9.0, 600.0, seed), warmup_s=100.0, end_at_s=600.0)
              for seed in range(20)]
    assert all(g > 0 for g in growth)
    assert abs(np.mean(growth) - 1.0 / 9.0) < 3 * np.std(growth) / math.sqrt(len(growth))
    for seed in range(20):
        stable = queue_delay_growth(_drained_fifo(8.0, 10.0, 600.0, seed), warmup_s=100.0, end_at_s=600.0)
        assert 0.0 <= stable * 600.0 < 1.0


def test_queue_delay_growth_of_exact_trends() -> None:
    """TTFT rising at 0.01 s per s with no noise is a perfect trend, also with the requests that never got
    a first token left out; a flat TTFT and a window with an empty batch give 0."""
    arrival = np.linspace(0.0, 100.0, 1001)
    first = arrival + 0.5 + 0.01 * arrival
    records = _records(arrival, first, first + 1.0, np.ones(1001, dtype=int))
    assert queue_delay_growth(records, warmup_s=0.0, end_at_s=100.0) == pytest.approx(0.01, rel=0.02)
    flat = _records(arrival, arrival + 0.5, arrival + 1.5, np.ones(1001, dtype=int))
    assert queue_delay_growth(flat, warmup_s=0.0, end_at_s=100.0) == 0.0
    unserved = _records(arrival, np.where(arrival % 10 < 9, first, NAN), first + 1.0,
                        np.ones(1001, dtype=int))
    assert queue_delay_growth(unserved, warmup_s=0.0, end_at_s=100.0) == pytest.approx(0.01, rel=0.02)
    assert queue_delay_growth(records, warmup_s=0.0, end_at_s=200.0) == 0.0  # batches past the arrivals
