"""Workload: arrival processes and length distributions against their analytic moments; trace and
preset handling. Statistical checks replicate over seeds and allow 4 standard errors."""

from __future__ import annotations

import math
import typing

import numpy as np
import pytest
from pydantic import ValidationError

from simulator.errors import InputError
from simulator.workload import (
    ARRIVALS,
    BENCHMARKS,
    LENGTHS,
    ArrivalProcess,
    EmpiricalLength,
    FixedLength,
    GammaArrivals,
    LengthDistribution,
    LengthModel,
    LogNormalLength,
    OfflineArrivals,
    PiecewiseRateArrivals,
    PoissonArrivals,
    TraceArrivals,
    Workload,
    benchmark_workload,
    read_table,
)


def _within_se(samples: list[float], target: float, num_se: float = 4.0, slack: float = 0.0) -> None:
    values = np.array(samples)
    se = values.std(ddof=1) / math.sqrt(len(values))
    assert abs(values.mean() - target) <= num_se * se + slack * abs(target), (values.mean(), target, se)


def _rate_and_cv(process, duration_s: float, seeds: range) -> tuple[list[float], list[float]]:
    rates, cvs = [], []
    for seed in seeds:
        times = process.sample_times(duration_s, np.random.default_rng(seed))
        assert np.all(np.diff(times) >= 0) and times.min() >= 0 and times.max() < duration_s
        gaps = np.diff(times)
        rates.append(len(times) / duration_s)
        cvs.append(gaps.std() / gaps.mean())
    return rates, cvs


@pytest.mark.parametrize(
    "process",
    [
        PoissonArrivals(rate_per_s=40.0),
        GammaArrivals(rate_per_s=40.0, cv=2.0),
        GammaArrivals(rate_per_s=5.0, cv=0.5),
    ],
)
def test_renewal_processes_match_rate_and_cv(process) -> None:
    rates, cvs = _rate_and_cv(process, 200.0, range(20))
    _within_se(rates, process.mean_rate_per_s)
    _within_se(cvs, process.interarrival_cv, slack=0.01)


def test_gamma_with_cv_one_is_poisson_like_and_bursty_gaps_differ() -> None:
    rng = np.random.default_rng(3)
    bursty = np.diff(GammaArrivals(rate_per_s=10.0, cv=3.0).sample_times(2000.0, rng))
    assert bursty.std() / bursty.mean() > 2.5  # a Poisson stream would give ~1


def test_piecewise_average_rate_and_counts_per_segment() -> None:
    curve = PiecewiseRateArrivals(
        segments=[
            {"start_s": 0, "rate_per_s": 5.0},
            {"start_s": 100, "rate_per_s": 20.0},
            {"start_s": 300, "rate_per_s": 0.0},
        ],
        period_s=400.0,
    )
    assert curve.mean_rate_per_s == pytest.approx((5 * 100 + 20 * 200) / 400)
    assert curve.expected_count(1000.0) == pytest.approx(2 * 4500 + 5 * 100 + 20 * 100)
    rates, _ = _rate_and_cv(curve, 2000.0, range(10))
    _within_se(rates, curve.mean_rate_per_s)
    times = curve.sample_times(4000.0, np.random.default_rng(7))
    phase = np.mod(times, 400.0)
    assert not np.any(phase >= 300.0)  # the zero-rate segment gets nothing
    low, high = np.sum(phase < 100.0), np.sum((phase >= 100.0) & (phase < 300.0))
    assert abs(low - 5000) < 4 * math.sqrt(5000) and abs(high - 40000) < 4 * math.sqrt(40000)


def test_piecewise_cv_long_segment_approximation() -> None:
    curve = PiecewiseRateArrivals(
        segments=[{"start_s": 0, "rate_per_s": 5.0}, {"start_s": 100, "rate_per_s": 20.0}], period_s=200.0
    )
    assert curve.interarrival_cv == pytest.approx(math.sqrt(2.125))
    _, cvs = _rate_and_cv(curve, 2000.0, range(10))
    _within_se(cvs, curve.interarrival_cv, slack=0.02)


def test_piecewise_aperiodic_keeps_last_rate() -> None:
    curve = PiecewiseRateArrivals(
        segments=[{"start_s": 0, "rate_per_s": 1.0}, {"start_s": 10, "rate_per_s": 50.0}]
    )
    assert curve.mean_rate_per_s == 50.0
    assert curve.expected_count(20.0) == pytest.approx(10 + 500)


@pytest.mark.parametrize(
    "segments",
    [
        [{"start_s": 5, "rate_per_s": 1}],
        [{"start_s": 0, "rate_per_s": 1}, {"start_s": 0, "rate_per_s": 2}],
        [{"start_s": 0, "rate_per_s": 0}],
    ],
)
def test_piecewise_rejects_bad_segments(segments) -> None:
    with pytest.raises(ValidationError):
        PiecewiseRateArrivals(segments=segments)


def test_offline_all_at_zero_and_ignores_duration() -> None:
    times = OfflineArrivals(num_requests=123).sample_times(1.0, np.random.default_rng(0))
    assert len(times) == 123 and np.all(times == 0.0)
    requests = Workload(arrivals={"kind": "offline", "num_requests": 50}, benchmark="mixtral-8x7b").generate(
        0.5, np.random.default_rng(0), np.random.default_rng(1)
    )
    assert len(requests) == 50 and np.all(requests.arrival_at_s == 0.0)


def test_registries_match_discriminated_unions() -> None:
    arrival_classes = set(typing.get_args(typing.get_args(ArrivalProcess)[0]))
    length_classes = set(typing.get_args(typing.get_args(LengthDistribution)[0]))
    assert arrival_classes == set(ARRIVALS.values())
    assert length_classes == set(LENGTHS.values())
    for name, cls in {**ARRIVALS, **LENGTHS}.items():
        assert cls.model_fields["kind"].default == name


def test_configs_are_strict_and_frozen() -> None:
    with pytest.raises(ValidationError):
        PoissonArrivals(rate_per_s=1.0, burst=2)
    with pytest.raises(ValidationError):
        PoissonArrivals(rate_per_s=0.0)
    process = PoissonArrivals(rate_per_s=1.0)
    with pytest.raises(ValidationError):
        process.rate_per_s = 2.0


# ----------------------------------------------------------------------------------------------
# Traces
# ----------------------------------------------------------------------------------------------


def _write(tmp_path, text: str, name: str = "trace.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_trace_replays_sorted_and_truncates(tmp_path) -> None:
    path = _write(tmp_path, "arrival_at_s,input_tokens,output_tokens\n2.5,10,3\n0.5,20,4\n1.0,30,5\n")
    trace = TraceArrivals(path=path)
    full = trace.load()
    assert full.arrival_at_s.tolist() == [0.5, 1.0, 2.5]
    assert full.input_tokens.tolist() == [20, 30, 10] and full.output_tokens.tolist() == [4, 5, 3]
    workload = Workload(arrivals={"kind": "trace", "path": str(path)})
    part = workload.generate(2.0, np.random.default_rng(0), np.random.default_rng(0))
    assert len(part) == 2 and part.input_tokens.dtype == np.int64
    assert trace.mean_rate_per_s == pytest.approx(2 / 2.0)


def test_trace_parquet(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "trace.parquet"
    pq.write_table(pa.table({"arrival_s": [0.0, 1.0], "input_tokens": [5, 6], "output_tokens": [7, 8]}), path)
    requests = TraceArrivals(path=path).requests(math.inf)
    assert requests.arrival_at_s.tolist() == [0.0, 1.0] and requests.output_tokens.tolist() == [7, 8]


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("arrival_s,input_tokens\n0,5\n", "output_tokens"),
        ("input_tokens,output_tokens\n5,5\n", "arrival_s"),
        ("arrival_s,input_tokens,output_tokens\n0,-5,3\n", "input_tokens"),
        ("arrival_s,input_tokens,output_tokens\n0,5,0\n", "output_tokens"),
        ("arrival_s,input_tokens,output_tokens\n-1,5,3\n", "arrival_s"),
        ("arrival_s,input_tokens,output_tokens\nsoon,5,3\n", "arrival_s"),
        ("arrival_s,input_tokens,output_tokens\n0,5.5,3\n", "input_tokens"),
    ],
)
def test_trace_errors_name_file_and_column(tmp_path, text: str, column: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as info:
        TraceArrivals(path=path).load()
    message = str(info.value)
    assert f"'{column}'" in message and "trace.csv" in message and "\n" not in message


def test_trace_missing_file_and_bad_suffix(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        TraceArrivals(path=tmp_path / "nope.csv").load()
    with pytest.raises(InputError, match="unsupported"):
        read_table(_write(tmp_path, "x", "trace.txt"))


def test_trace_takes_no_length_settings(tmp_path) -> None:
    path = _write(tmp_path, "arrival_s,input_tokens,output_tokens\n0,1,1\n")
    with pytest.raises(ValidationError):
        Workload(arrivals={"kind": "trace", "path": str(path)}, benchmark="llama2-70b")


# ----------------------------------------------------------------------------------------------
# Lengths
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dist",
    [
        LogNormalLength(mean_tokens=300, cv=1.5, max_tokens=1000),
        LogNormalLength(mean_tokens=800, cv=0.5, max_tokens=100_000, min_tokens=50),
    ],
)
def test_lognormal_sample_mean_matches_capped_analytic_mean(dist) -> None:
    means = [dist.sample(20_000, np.random.default_rng(seed)).mean() for seed in range(20)]
    _within_se(means, dist.capped_mean_tokens, slack=0.002)
    sample = dist.sample(50_000, np.random.default_rng(99))
    assert sample.dtype == np.int64 and sample.min() >= dist.min_tokens and sample.max() <= dist.max_tokens


def test_lognormal_cap_lowers_the_mean() -> None:
    dist = LogNormalLength(mean_tokens=300, cv=1.5, max_tokens=1000)
    assert dist.capped_mean_tokens < 300
    assert LogNormalLength(mean_tokens=300, cv=1.5, max_tokens=10**9).capped_mean_tokens == pytest.approx(
        300, rel=1e-6
    )


def test_llama2_preset_outputs_as_generated_and_inputs_from_file() -> None:
    model = benchmark_workload("llama2-70b")
    assert model.paired
    inputs, outputs = model.sample(100_000, np.random.default_rng(5))
    assert outputs.mean() == pytest.approx(291.0, rel=0.03)
    assert model.mean_output_tokens == pytest.approx(291.0, rel=0.005)
    assert outputs.max() <= 1024 and outputs.min() >= 1
    file_inputs = EmpiricalLength(benchmark="llama2-70b", column="input_length").values()
    assert set(np.unique(inputs)) <= set(np.unique(file_inputs))
    assert inputs.mean() == pytest.approx(222.3, rel=0.02) and inputs.max() <= 1021
    # paired: every sampled (input, output) is one row of the file, not an independent combination
    rows = set(zip(file_inputs.tolist(), model.output_tokens.values().tolist(), strict=True))
    assert all(pair in rows for pair in zip(inputs[:5000].tolist(), outputs[:5000].tolist(), strict=True))


@pytest.mark.parametrize(
    ("name", "output_mean", "cap"),
    [
        ("llama3.1-8b", 128.0, 128),
        ("llama3.1-405b", 652.0, 20000),
        ("mixtral-8x7b", 145.7, 1024),
        ("deepseek-r1", 3750.0, 20000),
        ("gpt-oss-120b", 1311.0, 10240),
        ("llama2-70b-99.9", 291.0, 1024),
    ],
)
def test_presets_hit_measured_output_means_and_caps(name: str, output_mean: float, cap: int) -> None:
    model = benchmark_workload(name)
    assert model.mean_output_tokens == pytest.approx(output_mean, rel=0.005)
    inputs, outputs = model.sample(20_000, np.random.default_rng(11))
    assert outputs.max() <= cap and outputs.min() >= 1 and inputs.min() >= 1
    assert outputs.mean() == pytest.approx(output_mean, rel=0.05)


def test_every_benchmark_has_a_preset_and_unknown_is_input_error() -> None:
    assert len(BENCHMARKS) == 6 and all(benchmark_workload(name) for name in BENCHMARKS)
    with pytest.raises(InputError, match="valid choices"):
        benchmark_workload("llama2-7b")
    with pytest.raises(ValidationError):
        EmpiricalLength(benchmark="gpt-oss-120b", column="input_length")  # no token file


def test_independent_lengths_when_not_the_same_file() -> None:
    model = LengthModel(
        input_tokens=FixedLength(tokens=7),
        output_tokens={"kind": "lognormal", "mean_tokens": 50, "cv": 1, "max_tokens": 500},
    )
    assert not model.paired
    inputs, outputs = model.sample(1000, np.random.default_rng(0))
    assert np.all(inputs == 7) and outputs.max() <= 500


def test_empirical_from_user_file_with_scale_and_cap(tmp_path) -> None:
    path = _write(tmp_path, "input_length,output_length\n10,100\n20,300\n", "lengths.csv")
    dist = EmpiricalLength(path=path, column="output_length", scale=2.0, max_tokens=500)
    assert sorted(np.unique(dist.values())) == [200, 500]
    assert dist.mean_tokens == 350.0


# ----------------------------------------------------------------------------------------------
# Workload
# ----------------------------------------------------------------------------------------------


def test_workload_generate_is_reproducible_and_streams_are_independent() -> None:
    workload = Workload(arrivals={"kind": "poisson", "rate_per_s": 20.0}, benchmark="llama2-70b")
    a = workload.generate(60.0, np.random.default_rng(1), np.random.default_rng(2))
    b = workload.generate(60.0, np.random.default_rng(1), np.random.default_rng(2))
    c = workload.generate(60.0, np.random.default_rng(1), np.random.default_rng(3))
    assert np.array_equal(a.arrival_at_s, b.arrival_at_s) and np.array_equal(a.output_tokens, b.output_tokens)
    assert np.array_equal(a.arrival_at_s, c.arrival_at_s) and not np.array_equal(
        a.input_tokens, c.input_tokens
    )
    assert a.arrival_at_s.dtype == np.float64 and a.input_tokens.dtype == np.int64


def test_workload_needs_one_length_source() -> None:
    with pytest.raises(ValidationError):
        Workload(arrivals={"kind": "poisson", "rate_per_s": 1.0})
    with pytest.raises(ValidationError):
        Workload(
            arrivals={"kind": "poisson", "rate_per_s": 1.0},
            benchmark="llama2-70b",
            input_tokens={"kind": "fixed", "tokens": 5},
            output_tokens={"kind": "fixed", "tokens": 5},
        )
    workload = Workload(
        arrivals={"kind": "gamma", "rate_per_s": 1.0, "cv": 2.0},
        input_tokens={"kind": "fixed", "tokens": 5},
        output_tokens={"kind": "fixed", "tokens": 9},
    )
    assert workload.mean_output_tokens == 9.0
    with pytest.raises(InputError):
        workload.generate(math.inf, np.random.default_rng(0), np.random.default_rng(0))
