"""Metrics of one run and across replications. Pure numpy, no I/O.

Glossary (per request r; all instants in s on the simulation clock, durations in s):
  a_r arrival_at_s, s_r scheduled_at_s (first entered a running batch; optional), f_r first_token_at_s,
  c_r finish_at_s (NaN while unfinished), n_r output_tokens.
  TTFT = f_r - a_r;  E2E = c_r - a_r;  queue delay = s_r - a_r;
  TPOT = (E2E - TTFT) / (n_r - 1)  (MLPerf LoadGen; undefined, hence excluded, when n_r = 1).

Measurement window: [warmup_s, end_at_s]. Latency statistics use the requests that arrive in it
(offline: every request; warm-up does not apply when all arrive at t = 0) and for which the quantity
is defined; requests unfinished when the records end are right-censored and left out, so run the
simulation past end_at_s to drain, or rely on the saturation rule below.

Throughput follows MLPerf: output tokens of completed requests divided by the time from the first
arrival to the last completion (Offline "Tokens per second" = token_count / max_latency; Server
"Completed tokens per second" = token_count / final_query_all_samples_done_time).
``steady_output_tokens_per_s`` counts the output tokens of requests completing inside the window,
divided by its length.

Confidence intervals are 95%: distribution-free order-statistic intervals for percentiles (exact
binomial, conservative; NaN where the sample is too small to bound the percentile on that side), a
normal interval for means, and a Student-t interval across replications (``combine_replications``).

Saturation (see ``detect_saturation``): a run whose backlog grows without bound has no steady state;
it is flagged ``saturated`` with a reason, and its latency statistics are NaN rather than a
misleading operating point. Throughput is still reported (it is then the capacity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from simulator.errors import InputError

CONFIDENCE = 0.95
_ALPHA = 1.0 - CONFIDENCE
_Z = NormalDist().inv_cdf(1.0 - _ALPHA / 2.0)
# Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30; beyond, a Cornish-Fisher expansion.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)

# Saturation rule thresholds (documented in detect_saturation).
NUM_BATCHES = 10
MIN_TREND_BATCHES = 4       # fewer independent batches in the window: the in-system trend is not tested
TREND_T_MIN = 3.0
# One-sided 99% Student t by degrees of freedom (batches - 2); the threshold is max(TREND_T_MIN, it).
_T_99_ONE_SIDED = {2: 6.965, 3: 4.541, 4: 3.747, 5: 3.365, 6: 3.143, 7: 2.998, 8: 2.896}
TREND_RISE_FRAC = 0.02
UNFINISHED_FRAC = 0.02
MIN_BACKLOG_REQUESTS = 10


@dataclass(frozen=True)
class RequestRecords:
    """One entry per request that arrived (numpy arrays of equal length).

    Times in s (``finish_at_s``/``first_token_at_s`` NaN when not reached); token counts int;
    ``preemptions`` per request; ``replica`` index. ``scheduled_at_s`` (optional, an addition): when the
    request first entered a running batch, for queue-delay statistics (NaN statistics if absent).
    """

    arrival_at_s: np.ndarray
    first_token_at_s: np.ndarray
    finish_at_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    preemptions: np.ndarray
    replica: np.ndarray
    scheduled_at_s: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.arrival_at_s)

    def tpot_s(self) -> np.ndarray:
        """Per-request TPOT (s): (E2E - TTFT) / (output tokens - 1), NaN while unfinished; a one-token
        request gets 0 (its TPOT is undefined: callers exclude it)."""
        out = np.asarray(self.output_tokens, dtype=np.float64)
        return (self.finish_at_s - self.first_token_at_s) / np.maximum(out - 1.0, 1.0)


@dataclass(frozen=True)
class Slo:
    """Per-request limits (MLPerf applies them to the p99 of TTFT and of TPOT), in s."""

    ttft_p99_s: float
    tpot_p99_s: float


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its 95% confidence interval (same unit as the value)."""

    value: float
    ci_low: float
    ci_high: float


_NAN_ESTIMATE = Estimate(math.nan, math.nan, math.nan)


@lru_cache(maxsize=256)
def _order_stat_indices(n: int, q: float) -> tuple[int, int]:
    """0-based order-statistic indices (lo, hi) with P(x_(lo) <= xi_q <= x_(hi)) >= 95%, -1 if none.

    With B ~ Binomial(n, q): P(x_(l) <= xi_q <= x_(u)) = F(u - 1) - F(l - 1) (1-based l, u); take the
    largest l with F(l - 1) <= alpha/2 and the smallest u with F(u - 1) >= 1 - alpha/2.
    """
    k = np.arange(n + 1)
    log_choose = np.concatenate(([0.0], np.cumsum(np.log((n - k[1:] + 1) / k[1:]))))
    cdf = np.cumsum(np.exp(log_choose + k * math.log(q) + (n - k) * math.log1p(-q)))
    lo = int(np.searchsorted(cdf, _ALPHA / 2.0, side="right")) - 1
    hi = int(np.searchsorted(cdf, 1.0 - _ALPHA / 2.0, side="left"))
    return lo, (hi if hi < n else -1)


def quantile_estimate(values: np.ndarray, q: float) -> Estimate:
    """The q-quantile (linear interpolation) with a distribution-free 95% order-statistic interval."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    if len(x) == 0:
        return _NAN_ESTIMATE
    lo, hi = _order_stat_indices(len(x), q)
    return Estimate(
        float(np.quantile(x, q)), float(x[lo]) if lo >= 0 else math.nan, float(x[hi]) if hi >= 0 else math.nan
    )


def mean_estimate(values: np.ndarray) -> Estimate:
    """The mean with a normal 95% interval (mean +- z * s / sqrt(n)); NaN interval for n < 2."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return _NAN_ESTIMATE
    mean = float(x.mean())
    if len(x) < 2:
        return Estimate(mean, math.nan, math.nan)
    half = _Z * float(x.std(ddof=1)) / math.sqrt(len(x))
    return Estimate(mean, mean - half, mean + half)


@dataclass(frozen=True)
class LatencyStats:
    """p50/p90/p99/mean of one latency (s), each with its 95% interval, over ``count`` requests."""

    count: int
    p50: Estimate
    p90: Estimate
    p99: Estimate
    mean: Estimate

    @classmethod
    def of(cls, values_s: np.ndarray) -> LatencyStats:
        return cls(
            len(values_s),
            quantile_estimate(values_s, 0.5),
            quantile_estimate(values_s, 0.9),
            quantile_estimate(values_s, 0.99),
            mean_estimate(values_s),
        )

    @classmethod
    def undefined(cls, count: int = 0) -> LatencyStats:
        return cls(count, _NAN_ESTIMATE, _NAN_ESTIMATE, _NAN_ESTIMATE, _NAN_ESTIMATE)


_LATENCIES = ("ttft", "tpot", "e2e", "queue_delay")
_STATS = ("p50", "p90", "p99", "mean")
_UNIT_SUFFIXES = ("_tokens_per_s", "_requests_per_s", "_frac", "_s")


def _tagged(key: str, tag: str) -> str:
    """Insert ``tag`` before the unit suffix: ('ttft_p99_s', '_ci_low') -> 'ttft_p99_ci_low_s'."""
    for suffix in _UNIT_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)] + tag + suffix
    return key + tag


@dataclass(frozen=True)
class MetricsSummary:
    """Summary of one run. Latencies in s, rates per s, fractions in [0, 1]. NaN = not measured.

    ``measured_requests``: arrivals in the window (the latency population). ``slo_met``: MLPerf's test
    (p99 TTFT and p99 TPOT within the limits, and not saturated); None without an SLO.
    """

    ttft_s: LatencyStats
    tpot_s: LatencyStats
    e2e_s: LatencyStats
    queue_delay_s: LatencyStats
    output_tokens_per_s: float
    steady_output_tokens_per_s: float
    total_tokens_per_s: float
    arrived_requests: int
    completed_requests: int
    measured_requests: int
    goodput_requests_per_s: float
    slo_attainment_frac: float
    slo_met: bool | None
    utilisation_frac: float
    kv_occupancy_mean_frac: float
    num_waiting_mean: float
    preemptions: int
    saturated: bool
    saturation_reason: str
    window_s: float

    def to_dict(self) -> dict[str, float | int | bool | str | None]:
        """Flat snake_case keys with unit suffixes, e.g. ``ttft_p99_s``, ``ttft_p99_ci_low_s``."""
        out: dict[str, float | int | bool | str | None] = {}
        for name in _LATENCIES:
            stats: LatencyStats = getattr(self, f"{name}_s")
            out[f"num_{name}_samples"] = stats.count
            for stat in _STATS:
                estimate: Estimate = getattr(stats, stat)
                key = f"{name}_{stat}_s"
                out[key] = estimate.value
                out[_tagged(key, "_ci_low")] = estimate.ci_low
                out[_tagged(key, "_ci_high")] = estimate.ci_high
        for field in fields(self):
            if field.name.removesuffix("_s") not in _LATENCIES:
                out[field.name] = getattr(self, field.name)
        return out


# ----------------------------------------------------------------------------------------------
# Step functions and saturation
# ----------------------------------------------------------------------------------------------


def _step_means(times: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time-averages over [edges[j], edges[j+1]] of the step function equal to values[i] on
    [times[i], times[i+1]) (values[0] before the first sample, values[-1] after the last)."""
    order = np.argsort(times, kind="stable")
    t = np.asarray(times, dtype=np.float64)[order]
    v = np.asarray(values, dtype=np.float64)[order]
    cumulative = np.concatenate(([0.0], np.cumsum(v[:-1] * np.diff(t))))
    k = np.clip(np.searchsorted(t, edges, side="right") - 1, 0, None)
    integral = cumulative[k] + v[k] * (edges - t[k])
    return np.diff(integral) / np.diff(edges)


def _window_mean(samples: tuple[np.ndarray, np.ndarray] | None, edges: np.ndarray) -> float:
    """Time-weighted mean of a sampled step function over [edges[0], edges[1]]; NaN without samples."""
    if samples is None or len(samples[0]) == 0:
        return math.nan
    return float(_step_means(np.asarray(samples[0]), np.asarray(samples[1]), edges)[0])


def _in_system(arrival_at_s: np.ndarray, finish_at_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The number of requests in the system (arrived, not finished) as a step function."""
    done = finish_at_s[~np.isnan(finish_at_s)]
    times = np.concatenate((arrival_at_s, done))
    steps = np.concatenate((np.ones(len(arrival_at_s)), -np.ones(len(done))))
    order = np.argsort(times, kind="stable")
    times = times[order]
    return np.concatenate((times[:1], times)), np.concatenate(([0.0], np.cumsum(steps[order])))


def _trend(batch_means: np.ndarray, width_s: float) -> tuple[float, float]:
    """OLS slope (per s) of equally spaced batch means and its t statistic (inf for a perfect rise)."""
    x = np.arange(len(batch_means)) * width_s
    x = x - x.mean()
    slope = float(np.dot(x, batch_means - batch_means.mean()) / np.dot(x, x))
    residual = batch_means - batch_means.mean() - slope * x
    se = math.sqrt(float(np.dot(residual, residual)) / (len(x) - 2) / float(np.dot(x, x)))
    if se == 0.0:
        return slope, (math.inf if slope > 0 else 0.0)
    return slope, slope / se


def _significant(t_stat: float, num_batches: int) -> bool:
    """Whether a trend over ``num_batches`` batch means is a rise: t > max(3, one-sided 99% Student t)."""
    return t_stat > max(TREND_T_MIN, _T_99_ONE_SIDED.get(num_batches - 2, 0.0))


def detect_saturation(
    records: RequestRecords,
    *,
    warmup_s: float,
    end_at_s: float,
    queue_samples: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[bool, str]:
    """Whether the backlog grows without bound in the window [warmup_s, end_at_s] of length W.

    With A arrivals in the window, the run is saturated if either:
      1. Trend: a backlog series, averaged over equal batches of the window, has an OLS slope with
         t > max(3, one-sided 99% Student t) (batch means tame the autocorrelation) AND a fitted rise
         (slope * W) above max(2% of A, 10) requests. Two series are tested: the number waiting
         (``queue_samples``, when given; 10 batches) and the number in the system (from the records: it
         also catches a running batch that grows without bound while nobody waits). The number in the
         system of a stable system stays correlated for about E[S^2] / E[S] (S: sojourn times of the
         window's finished requests; twice the mean residual life, long when outputs are heavy-tailed),
         so its batches are at least that wide: min(10, W / that) of them, and with fewer than 4 the
         window is too short to tell growth from the fill-up of long requests, so it is not tested.
      2. Unfinished: more than max(2% of A, 10) of the window's arrivals never finish in the records
         (the simulation drains after the window, so a stable system finishes them all).
    A stationary system's backlog fluctuates by O(its typical size) with no trend; the reason string
    names the rule that fired. Returns (saturated, reason); the reason is '' when not saturated.
    """
    arrival, finish = records.arrival_at_s, records.finish_at_s
    in_window = (arrival >= warmup_s) & (arrival < end_at_s)
    num_arrived = int(in_window.sum())
    if num_arrived == 0:
        return False, ""
    width_s = end_at_s - warmup_s
    rise_limit = max(TREND_RISE_FRAC * num_arrived, MIN_BACKLOG_REQUESTS)
    candidates = []
    if queue_samples is not None and len(queue_samples[0]) >= 2:
        candidates.append(("number waiting", (np.asarray(queue_samples[0]), np.asarray(queue_samples[1])),
                           NUM_BATCHES))
    finished = in_window & ~np.isnan(finish)
    sojourn_s = finish[finished] - arrival[finished]
    corr_s = float(np.mean(sojourn_s**2) / np.mean(sojourn_s)) if finished.any() else 0.0
    num_batches = NUM_BATCHES if corr_s <= 0 else min(NUM_BATCHES, int(width_s / corr_s))
    if num_batches >= MIN_TREND_BATCHES:
        candidates.append(("number in the system", _in_system(arrival, finish), num_batches))
    for series, (times, values), n in candidates:
        batch_edges = warmup_s + width_s * np.arange(n + 1) / n
        slope, t_stat = _trend(_step_means(times, values, batch_edges), width_s / n)
        rise = slope * width_s
        if _significant(t_stat, n) and rise > rise_limit:
            return True, (
                f"{series} grows through the measurement window (by {rise:.0f} requests, "
                f"t = {t_stat:.1f}): arrivals outpace completions, or the warm-up ends before steady state"
            )
    unfinished = int((in_window & np.isnan(finish)).sum())
    if unfinished > max(UNFINISHED_FRAC * num_arrived, MIN_BACKLOG_REQUESTS):
        return True, (
            f"{unfinished} of {num_arrived} requests arriving in the window never finished "
            "(the backlog outlived the drain after the window)"
        )
    return False, ""


def queue_delay_growth(
    records: RequestRecords, *, warmup_s: float, end_at_s: float, num_batches: int = NUM_BATCHES
) -> float:
    """How fast TTFT grows with arrival time through the window [warmup_s, end_at_s]: the OLS slope
    (s of TTFT per s of arrival time, dimensionless) of the mean TTFT of equal batches of the window's
    arrivals, when that slope is a significant rise (the saturation rule's t test; batch means tame the
    autocorrelation), else 0. A stable system's TTFT has no trend; a FIFO queue overloaded by
    rho = arrival rate / service rate > 1 has TTFT growing at rho - 1 s per s. Requests that never got
    a first token are left out (``detect_saturation`` counts them); 0 when a batch has no request with
    one."""
    arrival = records.arrival_at_s
    ttft_s = records.first_token_at_s - arrival
    edges = warmup_s + (end_at_s - warmup_s) * np.arange(num_batches + 1) / num_batches
    which = np.searchsorted(edges, arrival, side="right") - 1
    keep = (which >= 0) & (which < num_batches) & ~np.isnan(ttft_s)
    counts = np.bincount(which[keep], minlength=num_batches)
    if num_batches < 3 or np.any(counts == 0):
        return 0.0
    means = np.bincount(which[keep], weights=ttft_s[keep], minlength=num_batches) / counts
    slope, t_stat = _trend(means, (end_at_s - warmup_s) / num_batches)
    return slope if _significant(t_stat, num_batches) else 0.0


# ----------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------


def summarize(
    records: RequestRecords,
    *,
    warmup_s: float,
    end_at_s: float,
    offline: bool,
    slo: Slo | None = None,
    queue_samples: tuple[np.ndarray, np.ndarray] | None = None,
    busy_s: float | None = None,
    num_replicas: int = 1,
    kv_samples: tuple[np.ndarray, np.ndarray] | None = None,
) -> MetricsSummary:
    """Summarize one run (see the module docstring for definitions).

    ``queue_samples``/``kv_samples``: (sample_at_s, value) step functions over the run (number waiting;
    KV occupancy fraction), averaged over the window. ``busy_s``: summed busy time of all replicas over
    [0, end_at_s], so utilisation = busy_s / (num_replicas * end_at_s). Offline: the window is
    [0, end_at_s] and saturation is not assessed. InputError if the window is empty.
    """
    start_s = 0.0 if offline else warmup_s
    if not end_at_s > start_s:
        raise InputError(f"end_at_s ({end_at_s}) must exceed warmup_s ({start_s})")
    width_s = end_at_s - start_s
    arrival, first, finish = records.arrival_at_s, records.first_token_at_s, records.finish_at_s
    out_tokens = np.asarray(records.output_tokens, dtype=np.float64)
    done = ~np.isnan(finish)

    saturated, reason = (
        (False, "")
        if offline
        else detect_saturation(records, warmup_s=warmup_s, end_at_s=end_at_s, queue_samples=queue_samples)
    )

    measured = (arrival >= start_s) & (arrival < end_at_s)
    ttft = (first - arrival)[measured & ~np.isnan(first)]
    e2e_mask = measured & done & ~np.isnan(first)
    e2e = (finish - arrival)[e2e_mask]
    multi = e2e_mask & (out_tokens > 1)
    tpot_all = records.tpot_s()
    tpot = tpot_all[multi]
    samples = {"ttft": ttft, "tpot": tpot, "e2e": e2e}
    if records.scheduled_at_s is not None:
        scheduled = records.scheduled_at_s
        samples["queue_delay"] = (scheduled - arrival)[measured & ~np.isnan(scheduled)]
    latency = {name: LatencyStats.undefined() for name in _LATENCIES}
    for name, values in samples.items():
        # A saturated run has no steady state: its latencies are not an operating point.
        latency[name] = LatencyStats.undefined(len(values)) if saturated else LatencyStats.of(values)

    total_out = float(out_tokens[done].sum())
    total_in = float(np.asarray(records.input_tokens, dtype=np.float64)[done].sum())
    span_s = float(finish[done].max() - arrival.min()) if done.any() else 0.0
    in_window_done = done & (finish >= start_s) & (finish <= end_at_s)

    num_measured = int(measured.sum())
    goodput, attainment, slo_met = math.nan, math.nan, None
    if slo is not None:
        ttft_all = first - arrival
        good = e2e_mask & (ttft_all <= slo.ttft_p99_s) & ((out_tokens <= 1) | (tpot_all <= slo.tpot_p99_s))
        goodput = float(good.sum()) / width_s
        attainment = float(good.sum()) / num_measured if num_measured else math.nan
        slo_met = bool(
            not saturated
            and latency["ttft"].p99.value <= slo.ttft_p99_s
            and (latency["tpot"].count == 0 or latency["tpot"].p99.value <= slo.tpot_p99_s)
        )

    edges = np.array([start_s, end_at_s])
    return MetricsSummary(
        ttft_s=latency["ttft"],
        tpot_s=latency["tpot"],
        e2e_s=latency["e2e"],
        queue_delay_s=latency["queue_delay"],
        output_tokens_per_s=total_out / span_s if span_s > 0 else 0.0,
        steady_output_tokens_per_s=float(out_tokens[in_window_done].sum()) / width_s,
        total_tokens_per_s=(total_in + total_out) / span_s if span_s > 0 else 0.0,
        arrived_requests=len(records),
        completed_requests=int(done.sum()),
        measured_requests=num_measured,
        goodput_requests_per_s=goodput,
        slo_attainment_frac=attainment,
        slo_met=slo_met,
        utilisation_frac=busy_s / (num_replicas * end_at_s) if busy_s is not None else math.nan,
        kv_occupancy_mean_frac=_window_mean(kv_samples, edges),
        num_waiting_mean=_window_mean(queue_samples, edges),
        preemptions=int(np.sum(records.preemptions)),
        saturated=saturated,
        saturation_reason=reason,
        window_s=width_s,
    )


# ----------------------------------------------------------------------------------------------
# Replications
# ----------------------------------------------------------------------------------------------

COMBINED_KEYS: tuple[str, ...] = (
    *(f"{name}_{stat}_s" for name in _LATENCIES for stat in _STATS),
    "output_tokens_per_s",
    "steady_output_tokens_per_s",
    "total_tokens_per_s",
    "goodput_requests_per_s",
    "slo_attainment_frac",
    "utilisation_frac",
    "kv_occupancy_mean_frac",
    "num_waiting_mean",
    "completed_requests",
    "arrived_requests",
    "preemptions",
)


def t_quantile_975(df: int) -> float:
    """Student-t 0.975 quantile (two-sided 95%) for ``df`` >= 1 degrees of freedom."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def combine_replications(summaries: Sequence[MetricsSummary]) -> dict[str, float | int | bool]:
    """Mean and 95% Student-t interval (mean +- t_{0.975, k-1} * s / sqrt(k)) of ``COMBINED_KEYS``
    over k seeded replications: keys ``<metric>`` (mean), ``<metric>_ci_low``/``_ci_high`` inserted
    before the unit suffix (``ttft_p99_ci_low_s``). A metric that is NaN in any replication (e.g. a
    saturated one) stays NaN. Also ``num_replications``, ``saturated_replications``, ``saturated``.
    """
    if not summaries:
        raise InputError("combine_replications needs at least one summary")
    rows = [s.to_dict() for s in summaries]
    k = len(rows)
    out: dict[str, float | int | bool] = {"num_replications": k}
    for key in COMBINED_KEYS:
        values = np.array([float(row[key]) for row in rows])  # type: ignore[arg-type]
        mean = float(values.mean())
        half = t_quantile_975(k - 1) * float(values.std(ddof=1)) / math.sqrt(k) if k > 1 else math.nan
        out[key] = mean
        out[_tagged(key, "_ci_low")] = mean - half
        out[_tagged(key, "_ci_high")] = mean + half
    num_saturated = sum(bool(s.saturated) for s in summaries)
    out["saturated_replications"] = num_saturated
    out["saturated"] = num_saturated > 0
    return out
